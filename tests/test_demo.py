"""`fieldkit demo` end to end on a small shape, through the real mesh: validation gates choose, base / SFT / RL are
scored on the same test tasks, the run never reads a test task, and the demo ends with its JSON summary and can
render the README table. It runs as a person runs it, in its own process and quiet: the console gets progress, a
line per step and the table; vLLM's, Ray's and the actors' logs go to files under runs/<run>/logs/. On the random
tiny model: the demo's tiny-agent takes minutes to pretrain, and what is tested here is the demo's flow, not what
its model learns (README)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_run_config

from fieldkit.eval import Comparison
from fieldkit.eval.summary import README_BEGIN, README_END
from fieldkit.gym.corpus import load_corpus, stratified_subset
from fieldkit.runs import read_episodes

pytestmark = [pytest.mark.engine, pytest.mark.ray, pytest.mark.sandbox, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def test_demo_chooses_on_validation_and_reports_base_sft_rl_on_test(tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO / "deploy/configs/demo-cpu.yaml").read_text())
    path = write_run_config(
        tmp_path,
        "demo-small",
        max_steps=2,
        n_train=10,  # 16 tasks: 10 train, 2 validation, 4 test of which the demo scores 2
        sft={**demo["sft"], "epochs": 1},
        eval={"every_n_steps": 1, "validation_limit": 2, "test_limit": 2},
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\n{README_END}\n")
    args = ["demo", "--config", str(path), "--seeds", "3", "--json", "--readme", str(readme)]
    env = {**os.environ, "RAY_ADDRESS": ""}  # a local cluster of its own
    done = subprocess.run(
        [sys.executable, "-m", "fieldkit.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads(done.stdout.strip().splitlines()[-1])  # the JSON summary comes last
    assert (summary["seed"], summary["split"], summary["n_tasks"], summary["validation_tasks"]) == (3, "test", 2, 2)
    assert set(summary["policies"]) == {"base", "sft", "rl"} and set(summary["delta_rl_sft"]["task_pass"]) == {
        "pp",
        "ci95",
        "p_value",
    }
    run = tmp_path / "runs" / summary["run"]
    assert json.loads((run / "report" / "summary.json").read_text()) == summary
    assert_quiet_with_progress(done.stdout, done.stderr, run / "logs", steps=2)

    tasks, split = load_corpus(tmp_path / "corpus")
    roles = {t.task_id: t.persona.role for t in tasks}
    test_ids = stratified_subset(split.test, roles, 2, "test")
    comparison = Comparison.model_validate_json((run / "report" / "report.json").read_text())
    assert (comparison.policies, comparison.baseline, comparison.split) == (["base", "sft", "rl"], "sft", "test")
    assert comparison.task_ids == sorted(test_ids)
    for policy in ("base", "sft", "rl"):
        assert sorted(e.task_id for e in read_episodes(run / "test" / policy / "episodes.jsonl")) == sorted(test_ids)
    gated = {e.task_id for gate in (run / "gates").glob("*/episodes.jsonl") for e in read_episodes(gate)}
    assert gated == set(split.validation)  # the gates read validation tasks only, never a test task
    stepped = {e.task_id for step in (run / "steps").glob("*/episodes.jsonl") for e in read_episodes(step)}
    assert stepped <= set(split.train)

    # RL is the adapter the run chose on validation: runs/<run>/best holds the chosen gate's adapter.
    best = json.loads((run / "best" / "adapter_ref.json").read_text())
    chosen = json.loads((run / "checkpoints" / f"{summary['rl_step']:06d}" / "state.json").read_text())["adapter"]
    assert best["name"] == chosen["name"]
    text = readme.read_text()
    assert f"Seed 3 (run `{summary['run']}`" in text and "| test, 2 tasks | base | SFT | RL |" in text


def assert_quiet_with_progress(stdout: str, stderr: str, logs: Path, steps: int) -> None:
    """At most 60 console lines, progress among them (stdout is a pipe here: plain lines, as in a job's log), one
    line per step; nothing on stderr (the driver's log); the engine's, Ray's and the actors' lines in their files."""
    lines = stdout.splitlines()
    assert len(lines) <= 60, stdout
    assert stderr == "", stderr
    assert f"logs (Ray, vLLM, the actors): {logs}/" in stdout
    assert any(re.fullmatch(r"starting the mesh: .*: 3/3 in (\d+m)?\d+s", line) for line in lines), stdout
    assert [line[: line.index(":")] for line in lines if re.match(r"step \d+/\d+:", line)] == [
        f"step {n}/{steps}" for n in range(1, steps + 1)
    ]
    for noise in ("Initializing a V1 LLM engine", "pid=", "INFO", "WARNING", "Traceback"):
        assert noise not in stdout, stdout
    engine = "".join(log.read_text() for log in logs.glob("policy-*.log"))
    assert "Initializing a V1 LLM engine" in engine  # vLLM's engine core, a child process of the policy server
    assert "Started a local Ray instance" in (logs / "driver.log").read_text()
    assert all(list(logs.glob(f"{role}-*.log")) for role in ("learner", "rollout", "grader", "sandbox-pool"))
