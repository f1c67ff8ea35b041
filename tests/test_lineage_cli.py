"""`fieldkit lineage ...` against a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from test_lineage import rl_run
from test_lineage_tsv import ROWS, tsv_text
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.lineage import LineageStore

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["lineage", *args])
    return result.exit_code, result.stdout, result.stderr


def test_show_best_chain_card(tmp_path: Path) -> None:
    db = tmp_path / "lineage.db"
    rl_run(LineageStore(db))
    code, out, _ = run("show", "--db", str(db), "--run", "grpo", "--json")
    assert code == 0 and len(json.loads(out)) == 10
    code, out, _ = run("show", "--db", str(db), "-n", "2", "--json")
    assert [t["trial_id"] for t in json.loads(out)] == ["grpo/step-0006", "grpo/gate-0006"]
    code, out, _ = run("best", "--db", str(db), "--run", "grpo", "--json")
    assert code == 0 and json.loads(out)[0]["trial_id"] == "grpo/gate-0002"
    code, out, _ = run("chain", "--db", str(db), "--run", "grpo", "--json")
    assert [t["trial_id"] for t in json.loads(out)] == [
        "grpo/gate-0000",
        "grpo/step-0001",
        "grpo/step-0002",
        "grpo/gate-0002",
    ]
    code, out, _ = run("card", "--db", str(db), "--run", "grpo")
    assert code == 0 and out == LineageStore(db).card("grpo")
    card_file = tmp_path / "card.md"
    code, _, _ = run("card", "--db", str(db), "--run", "grpo", "--out", str(card_file))
    assert code == 0 and card_file.read_text() == out
    code, out, _ = run("show", "--db", str(db))
    assert code == 0 and "10 trials" in out  # the rich table (its width follows the terminal)


def test_import_then_export(tmp_path: Path) -> None:
    db, tsv, back = tmp_path / "lineage.db", tmp_path / "results.tsv", tmp_path / "back.tsv"
    tsv.write_text(tsv_text(ROWS))
    code, out, err = run("import", str(tsv), "--run", "pg", "--db", str(db))
    assert code == 0, err
    assert "imported 6 trials" in out
    code, out, _ = run("best", "--db", str(db), "--run", "pg", "--json")
    assert json.loads(out)[0]["trial_id"] == "pg/005"
    code, _, _ = run("export", str(back), "--run", "pg", "--db", str(db))
    assert code == 0 and back.read_bytes() == tsv.read_bytes()
    # Importing the same file again is refused as a whole; nothing is duplicated.
    code, _, err = run("import", str(tsv), "--run", "pg", "--db", str(db))
    assert code == 2 and "'pg/000' is already in the store" in err
    assert len(LineageStore(db).trials("pg")) == 6


def test_errors_are_clear(tmp_path: Path) -> None:
    code, _, err = run("show", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no lineage store at" in err
    db = tmp_path / "lineage.db"
    rl_run(LineageStore(db))
    code, _, err = run("best", "--db", str(db), "--run", "nope")
    assert code == 2 and "no trials of run 'nope'" in err
    code, _, err = run("chain", "grpo/nope", "--db", str(db))
    assert code == 2 and "no trial 'grpo/nope'" in err
    bad = tmp_path / "bad.tsv"
    bad.write_text(tsv_text([[*ROWS[0][:8], "kept", *ROWS[0][9:]]]))
    code, _, err = run("import", str(bad), "--run", "x", "--db", str(db))
    assert code == 2 and "line 2: status 'kept'" in err
