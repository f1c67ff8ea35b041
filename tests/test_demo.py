"""`fieldkit demo` end to end on a small shape: base, SFT and RL evaluated on the same held-out tasks, the matched
table, the lineage card and the report, through the real mesh. On the random tiny model: the demo's tiny-agent
takes minutes to pretrain, and what is tested here is the demo's flow, not what its model learns (README)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import write_run_config

from fieldkit.config import RunConfig
from services.demo import run_demo

pytestmark = [pytest.mark.engine, pytest.mark.ray, pytest.mark.sandbox, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def test_demo_compares_base_sft_and_rl_on_the_same_heldout_tasks(tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO / "deploy/configs/demo-cpu.yaml").read_text())
    path = write_run_config(
        tmp_path,
        "demo-small",
        max_steps=2,
        sft={**demo["sft"], "epochs": 1},
        eval={"every_n_steps": 2, "heldout_limit": 2},
    )
    result = run_demo(RunConfig.from_yaml(path))

    assert result.comparison.policies == ["base", "sft", "rl@2"]
    assert len(result.comparison.task_ids) == 2  # the same two held-out tasks in each column
    overall = next(s for s in result.comparison.slices if s.group == "all")
    assert {v.n_episodes for v in overall.values.values()} == {2}
    run = next((tmp_path / "runs").glob("demo-small-*"))
    assert (run / "eval" / "base" / "episodes.jsonl").exists()
    assert (run / "report" / "report.md").exists()
    assert "heldout-gate" in result.card and "sft" in result.card
