"""`fieldkit eval report` from files on disk: episodes JSONL, the task file, and the lineage store for curves."""

from __future__ import annotations

import json
from pathlib import Path

from test_eval import PERSONAS, write_policies
from test_lineage import rl_run
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.lineage import LineageStore

runner = CliRunner()


def write_tasks(path: Path, personas: dict[str, str]) -> Path:
    """The two fields the report reads from a ClawGym tasks.jsonl (the rest of a task is ignored)."""
    path.write_text(
        "".join(json.dumps({"task_id": t, "persona": {"role": r, "context": ""}}) + "\n" for t, r in personas.items())
    )
    return path


def test_report_from_disk_with_curves(tmp_path: Path) -> None:
    paths = write_policies(tmp_path)
    tasks = write_tasks(tmp_path / "tasks.jsonl", PERSONAS)
    db = tmp_path / "lineage.db"
    rl_run(LineageStore(db))
    out = tmp_path / "report"
    args = ["eval", "report", f"base={paths['base']}", f"rl={paths['rl']}", "--tasks", str(tasks), "--out", str(out)]
    result = runner.invoke(app, [*args, "--run", "grpo", "--db", str(db), "--bootstrap", "200"])
    assert result.exit_code == 0, result.stderr
    assert "task pass" in result.stdout and "+50.0 pp" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "per_kind.png",
        "per_persona.png",
        "report.json",
        "report.md",
        "training_curves.png",
    ]
    first = (out / "report.md").read_text()
    again = runner.invoke(app, [*args, "--run", "grpo", "--db", str(db), "--bootstrap", "200", "--json"])
    assert again.exit_code == 0, again.stderr
    payload = json.loads(again.stdout)
    assert payload["comparison"]["pass_at_k"] == {"base": {"1": 0.25}, "rl": {"1": 0.75}}
    assert (out / "report.md").read_text() == first  # rebuilt from the same files: the same report


def test_a_directory_of_episode_files_and_a_bare_path(tmp_path: Path) -> None:
    paths = write_policies(tmp_path)
    step_dir = tmp_path / "gates" / "000004"
    step_dir.mkdir(parents=True)
    paths["rl"].rename(step_dir / "episodes.jsonl")
    tasks = write_tasks(tmp_path / "tasks.jsonl", PERSONAS)
    result = runner.invoke(
        app,
        [
            "eval",
            "report",
            str(paths["base"]),
            f"rl={step_dir.parent}",
            "--tasks",
            str(tasks),
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["comparison"]["policies"] == ["base", "rl"]


def test_bad_inputs_exit_2_naming_the_tasks(tmp_path: Path) -> None:
    paths = write_policies(tmp_path)
    tasks = write_tasks(tmp_path / "tasks.jsonl", {k: v for k, v in PERSONAS.items() if k != "t4"})
    result = runner.invoke(
        app,
        [
            "eval",
            "report",
            f"base={paths['base']}",
            f"rl={paths['rl']}",
            "--tasks",
            str(tasks),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "tasks with no persona in the task file: t4" in result.stderr
    assert not (tmp_path / "r").exists()
    result = runner.invoke(app, ["eval", "report", f"base={paths['base']}", "--tasks", str(tasks)])
    assert result.exit_code == 2 and "--out" in result.stderr
