"""`fieldkit sft --pairs`: LoRA SFT on Q&A pairs on the tiny model, end to end through the command: the held-out
split is scored before and after, the adapter is written where `fieldkit serve --adapter` reads it, and the run is
a lineage trial."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.rag.records import default_data, load_pairs
from fieldkit.training.qa_sft import split_pairs

REPO = Path(__file__).resolve().parent.parent


def test_holdout_split_is_stable_and_disjoint() -> None:
    pairs = load_pairs(default_data("pairs.jsonl"))
    train, held = split_pairs(pairs, 0.2)
    assert not {p.id for p in train} & {p.id for p in held} and len(train) + len(held) == len(pairs)
    assert 0.1 < len(held) / len(pairs) < 0.3
    # the split of a pair does not depend on which other pairs are in the file
    _, held_again = split_pairs(list(reversed(pairs[: len(pairs) // 2])), 0.2)
    assert {p.id for p in held_again} <= {p.id for p in held}


def test_sft_on_pairs_reports_before_and_after(tmp_path: Path, tiny_model_dir: Path) -> None:
    pairs = tmp_path / "qa.jsonl"
    pairs.write_text("".join(default_data("pairs.jsonl").read_text().splitlines(keepends=True)[:40]))
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "qa-test",
        "model": {"name_or_path": "tiny"},
        "lora": {"rank": 8, "alpha": 16},
        "sft": {"batch_size": 8, "max_length": 256},
        "paths": {"runs_dir": str(tmp_path / "runs"), "models_dir": str(REPO / "runs" / "models"),
                  "lineage_db": str(tmp_path / "lineage.db")},
        "qa": {"eval_limit": 4, "max_tokens": 8},
    }))  # fmt: skip
    result = CliRunner().invoke(app, ["sft", "--pairs", str(pairs), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["held_out_pairs"] == 4 and report["train_pairs"] + report["held_out_pairs"] <= 40
    for when in ("before", "after"):
        assert set(report[when]) == {"refusal_rate", "accuracy", "style_similarity"}
        assert report[when]["refusal_rate"]["n"] == 4 and 0 <= report[when]["refusal_rate"]["mean"] <= 1
        assert -1 <= report[when]["style_similarity"]["mean"] <= 1
    assert report["sft"]["sft_steps"] >= 1 and report["wall_s"]["train_s"] > 0

    out = tmp_path / "runs" / "qa-test" / "sft"
    adapter = Path(report["adapter"])
    assert adapter == out / "adapter" and (adapter / "adapter_config.json").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    replies = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == 4 and all({"before", "after", "reference"} <= set(r) for r in replies)
    assert "| refusals |" in (out / "report.md").read_text()

    from fieldkit.lineage import LineageStore

    [trial] = LineageStore(tmp_path / "lineage.db").trials("qa-test")
    assert trial.kind == "sft" and trial.artifacts["adapter"] == str(adapter)
    assert trial.metrics["qa.after.style_similarity"] == report["after"]["style_similarity"]["mean"]
