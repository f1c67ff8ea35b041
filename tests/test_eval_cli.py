"""`fieldkit eval report` from files on disk: episodes JSONL, the task file, and the lineage store for curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval import FLOORS, PERSONAS, episode, hand_made_policies, write_policies
from test_lineage import rl_run
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.eval import compare, write_report
from fieldkit.eval.summary import README_BEGIN, README_END, demo_summary, replace_between_markers
from fieldkit.gym.corpus import write_corpus
from fieldkit.gym.generator import generate_tasks
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


def three_policies() -> dict[str, list]:
    """base = the hand-made base, sft = the same outcomes under other episode ids, rl = the hand-made rl."""
    made = hand_made_policies()
    sft = [e.model_copy(update={"episode_id": e.episode_id.replace("base", "sft")}) for e in made["base"]]
    return {"base": made["base"], "sft": sft, "rl": made["rl"]}


def write_demo_run(run_dir: Path, seed: int) -> dict:
    """A run directory as `fieldkit demo` leaves it: report/report.json and report/summary.json."""
    comparison = compare(three_policies(), PERSONAS, baseline="sft", floors=FLOORS, split="test", seed=seed)
    write_report(comparison, run_dir / "report")
    prior = {"first_program": 0.95, "first_command": 0.875, "all_replies": 0.6}
    summary = demo_summary(
        comparison, seed=seed, wall_s=612.3, run=run_dir.name, rl_step=8, validation_tasks=24, prior_accuracy=prior
    )
    (run_dir / "report" / "summary.json").write_text(json.dumps(summary))
    return summary


def test_demo_summary_has_the_agreed_shape(tmp_path: Path) -> None:
    summary = write_demo_run(tmp_path / "demo-s0", 0)
    assert json.loads(json.dumps(summary)) == summary  # plain JSON
    assert list(summary) == [
        "seed", "split", "n_tasks", "policies", "delta_rl_sft", "wall_s", "run", "rl_step", "validation_tasks",
        "prior_accuracy",
    ]  # fmt: skip
    assert (summary["seed"], summary["split"], summary["n_tasks"]) == (0, "test", 4)
    metrics = ["task_pass", "per_assertion", "per_assertion_net", "task_complete", "mean_turns"]
    assert {p: list(v) for p, v in summary["policies"].items()} == {p: metrics for p in ("base", "sft", "rl")}
    assert summary["policies"]["rl"] == pytest.approx(
        {"task_pass": 0.75, "per_assertion": 6 / 7, "per_assertion_net": 0.8, "task_complete": 1.0, "mean_turns": 3.5}
    )
    deltas = summary["delta_rl_sft"]
    assert deltas["task_pass"]["pp"] == pytest.approx(50.0) and deltas["task_pass"]["p_value"] == pytest.approx(0.5)
    assert deltas["per_assertion_net"]["pp"] == pytest.approx(60.0)
    assert deltas["mean_turns"]["turns"] == pytest.approx(-1.75) and "pp" not in deltas["mean_turns"]
    low, high = deltas["task_pass"]["ci95"]
    assert low <= 50.0 <= high


def test_readme_demo_section_is_rendered_from_report_files(tmp_path: Path) -> None:
    runs = [tmp_path / "runs" / f"demo-s{seed}" for seed in (0, 1)]
    for seed, run in enumerate(runs):
        write_demo_run(run, seed)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{README_BEGIN}\nstale numbers\n{README_END}\n\nafter\n")
    result = runner.invoke(app, ["eval", "readme", *map(str, runs), "--readme", str(readme)])
    assert result.exit_code == 0, result.stderr
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("# x\n\nbefore\n") and text.endswith("\nafter\n")
    assert "Seed 0 (run `demo-s0`, 10.2 min): 4 tasks of the test split; RL is the adapter of step 8" in text
    assert "| test, 4 tasks | base | SFT | RL | RL − SFT [95% CI] p |" in text
    assert "| task pass | 1/4 (25.0%) | 1/4 (25.0%) | 3/4 (75.0%) | +50.0 pp [" in text
    assert "| per-assertion net of floor | 1/5 (20.0%) | 1/5 (20.0%) | 4/5 (80.0%) | +60.0 pp [" in text
    assert "RL − SFT on the test split, seed by seed:" in text and "\n| 1 | +50.0 pp [" in text
    said = "program right in 95%, the whole first command (names copied from the prompt) in 88%"
    assert text.count(said) == 1  # one model, said once
    assert runner.invoke(app, ["eval", "readme", *map(str, runs), "--readme", str(readme)]).exit_code == 0
    assert readme.read_text() == text  # rendered again from the same files: the same bytes

    readme.write_text("no markers\n")
    missing = runner.invoke(app, ["eval", "readme", str(runs[0]), "--readme", str(readme)])
    assert missing.exit_code == 2 and "marker lines" in missing.stderr
    gone = runner.invoke(app, ["eval", "readme", str(tmp_path / "nothing"), "--readme", str(readme)])
    assert gone.exit_code == 2 and "summary.json is missing" in gone.stderr


def test_split_and_floor_from_a_real_corpus(tmp_path: Path) -> None:
    """--split refuses episodes of tasks outside that split of the corpus; whole tasks give the floor."""
    tasks = generate_tasks(1, 0)
    split = write_corpus(tmp_path / "corpus", tasks, n_train=2, n_validation=2, seed=0)
    by_id = {t.task_id: t for t in tasks}
    for policy in ("base", "rl"):
        made = [episode(policy, i, [(a.kind, policy == "rl") for a in by_id[i].verifiable_assertions], True, 2, 1.0)
                for i in split.test]  # fmt: skip
        (tmp_path / f"{policy}.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in made))
    args = ["eval", "report", f"base={tmp_path / 'base.jsonl'}", f"rl={tmp_path / 'rl.jsonl'}"]
    args += ["--tasks", str(tmp_path / "corpus" / "tasks.jsonl"), "--out", str(tmp_path / "r"), "--json"]
    result = runner.invoke(app, [*args, "--split", "test"])
    assert result.exit_code == 0, result.stderr
    comparison = json.loads(result.stdout)["comparison"]
    headline = next(s for s in comparison["slices"] if s["group"] == "all")
    assert comparison["split"] == "test" and headline["values"]["rl"]["per_assertion_net"] == 1.0
    base = headline["values"]["base"]  # fails every assertion, also those the untouched seed passes: below 0
    floor, total = base["assertions_floor"], base["assertions_total"]
    assert 0 < floor < total and base["per_assertion_net"] == pytest.approx(-floor / (total - floor))
    wrong = runner.invoke(app, [*args, "--split", "validation"])
    assert wrong.exit_code == 2 and f"tasks not in the validation split of {tmp_path / 'corpus'}" in wrong.stderr


def test_the_project_readme_has_the_demo_table_markers() -> None:
    """`fieldkit demo --readme README.md` renders into the project's README: its marker lines are there, once."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    rendered = replace_between_markers(text, "the table")
    assert rendered.split(README_BEGIN)[0] == text.split(README_BEGIN)[0] and "\nthe table\n" in rendered
