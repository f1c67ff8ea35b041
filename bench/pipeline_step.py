"""Step wall of the pipelined driver (`rollout.max_staleness: 1`) against the synchronous one, same run otherwise.

Each mode trains the tiny model for a few steps through the real mesh (its own engine, sandboxes, learner; no SFT
warm start, held-out gate only at step 0); the figure is the mean wall of steps 2.. (step 1 cannot overlap
anything). Pipelining overlaps step n+1's rollouts with step n's learner step and publish, so the gain is bounded
by the smaller of the two; on 2 CPU cores the engine and the learner also compete for the same cores.

Run: `python -m bench.pipeline_step [steps]` (default 5).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig
from fieldkit.gym.corpus import load_corpus, write_corpus
from fieldkit.gym.generator import generate_tasks
from fieldkit.runs import RunDir

GOAL = 1.5  # the issue's: pipelined steps at least 1.5x faster


def train(tmp: Path, staleness: int, steps: int) -> dict[str, float]:
    import ray

    from services.mesh import start_mesh
    from services.train import TrainingRun

    corpus = tmp / "corpus"
    if not (corpus / "tasks.jsonl").exists():
        write_corpus(corpus, generate_tasks(per_persona=2, seed=0), n_train=16, n_validation=0, seed=0)
    cfg = RunConfig.model_validate(
        {
            "run_name": f"staleness-{staleness}",
            "max_steps": steps,
            "model": {"max_model_len": 2048},
            "lora": {"rank": 8, "alpha": 16, "max_lora_rank": 16},
            "rollout": {
                "tasks_per_step": 4,
                "group_size": 4,
                "max_turns": 4,
                "max_tokens_per_turn": 32,
                "max_staleness": staleness,
            },
            "sandbox": {"pool_size": 4},
            "eval": {"every_n_steps": steps + 1, "validation_limit": 4},  # a gate at step 0 and the last step only
            "paths": {"runs_dir": str(tmp / "runs"), "corpus_dir": str(corpus), "lineage_db": str(tmp / "lineage.db")},
        }
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        mesh = start_mesh(cfg)
        try:
            tasks, split = load_corpus(corpus)
            run = TrainingRun(cfg, mesh, {t.task_id: t for t in tasks}, split.train, split.validation)
            run.run(run.start(resume=False))
        finally:
            mesh.shutdown()
    finally:
        ray.shutdown()
    run_dir = RunDir(cfg.run_dir)
    ran = [step for step in range(2, steps + 1) if run_dir.step_metrics(step).exists()]  # a saturated run stops early
    metrics = [json.loads(run_dir.step_metrics(step).read_text()) for step in ran]

    def mean(key: str) -> float:
        return sum(m.get(key, 0.0) for m in metrics) / len(metrics)

    return {
        "step_s": mean("wall.step_s"),
        "rollout_wait_s": mean("wall.rollout_s"),
        "train_s": mean("wall.train_s"),
        "publish_s": mean("wall.publish_s"),
        "stale_turn_share": mean("rollout.stale_turn_share"),
    }


def main(steps: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sync = train(Path(tmp), 0, steps)
        pipelined = train(Path(tmp), 1, steps)
        total_s = time.perf_counter() - start
    speedup = sync["step_s"] / pipelined["step_s"]
    print(f"pipelined vs synchronous driver: tiny model, {steps} steps of 4 tasks x 4 rollouts, mean of steps 2..")
    print(f"{'mode':<13}{'step s':>8}{'rollout wait s':>16}{'train s':>9}{'publish s':>11}{'stale turns':>13}")
    for label, row in (("synchronous", sync), ("pipelined", pipelined)):
        print(
            f"{label:<13}{row['step_s']:>8.2f}{row['rollout_wait_s']:>16.2f}{row['train_s']:>9.2f}"
            f"{row['publish_s']:>11.2f}{row['stale_turn_share']:>13.1%}"
        )
    print(f"synchronous / pipelined step wall: x{speedup:.2f} (goal >= x{GOAL}); both runs took {total_s:.0f} s")
    return {
        **{f"sync_{k}": v for k, v in sync.items()},
        **{f"pipelined_{k}": v for k, v in pipelined.items()},
        "pipelined_step_speedup": speedup,
    }


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
