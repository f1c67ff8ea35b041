"""Episodes per minute of the mesh against the reference's sequential loop, same policy, tasks and seeds, one run.

Baseline: one episode at a time (the reference's harness: generate, exec, observe, one episode after another),
here through the same actors so only the concurrency differs. Mesh: every episode submitted at once to the
rollout workers (async, many episodes in flight each) over a pool of N sandboxes; the engine batches their turns.
The issue's goal is a speedup of at least 0.7 x N. The default policy is the tiny model's base, whose replies are
not commands (even after SFT it does not learn the protocol), so its episodes are engine-bound; `smollm2-135m`
(a real instruct model, see the README) issues commands, so its figures include sandbox work. The figures say how
many commands the episodes ran.

Run: `python -m bench.mesh_throughput [episodes] [model]` (defaults: 24, tiny).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig
from fieldkit.gym.corpus import load_corpus, write_corpus
from fieldkit.gym.generator import generate_tasks
from fieldkit.gym.records import Episode

SANDBOXES = 4
WORKERS = 2  # one per core; each runs many episodes at once
GOAL_PER_SANDBOX = 0.7


def summary(episodes: list[Episode], wall_s: float) -> dict[str, float]:
    turns = [len(e.turns) for e in episodes]
    commands = sum(1 for e in episodes for t in e.turns if t.exec_result is not None)
    return {
        "episodes_per_min": len(episodes) / wall_s * 60,
        "wall_s": wall_s,
        "mean_turns": sum(turns) / len(turns),
        "commands": float(commands),
        "failed": float(sum(e.stop_reason == "failed" for e in episodes)),
    }


def main(episodes: int = 24, model: str = "tiny") -> dict[str, Any]:
    import ray

    from services.mesh import episode_specs, run_episodes, start_mesh

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_corpus(corpus, generate_tasks(per_persona=2, seed=0), n_train=16, n_validation=0, seed=0)
        tasks, _ = load_corpus(corpus)
        cfg = RunConfig.model_validate(
            {
                "run_name": "mesh-bench",
                "model": {"name_or_path": model, "dtype": "float32", "max_model_len": 2048},  # smollm2 needs fp32
                "rollout": {"workers": WORKERS, "max_turns": 4, "max_tokens_per_turn": 32},
                "sandbox": {"pool_size": SANDBOXES, "max_concurrent_execs": SANDBOXES},
                "paths": {"runs_dir": str(Path(tmp) / "runs"), "corpus_dir": str(corpus)},
            }
        )
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        mesh = start_mesh(cfg)
        try:
            groups = (episodes + 1) // 2
            specs = episode_specs(tasks[:groups], k=2, adapter=None, temperature=1.0, seed=0, prefix="bench")[:episodes]
            run_episodes(mesh, specs[:WORKERS], "warm-up")  # engine caches, sandbox images, worker imports

            start = time.perf_counter()
            sequential = [run_episodes(mesh, [spec], "sequential")[0] for spec in specs]
            sequential_s = time.perf_counter() - start

            start = time.perf_counter()
            concurrent = run_episodes(mesh, specs, "mesh")
            mesh_s = time.perf_counter() - start
        finally:
            mesh.shutdown()
            if started_ray:
                ray.shutdown()

    base, ours = summary(sequential, sequential_s), summary(concurrent, mesh_s)
    speedup = ours["episodes_per_min"] / base["episodes_per_min"]
    goal = GOAL_PER_SANDBOX * SANDBOXES
    print(f"mesh throughput: {episodes} episodes of {model} (base), {SANDBOXES} sandboxes, "
          f"{WORKERS} rollout workers; baseline: the same episodes one at a time, same run")  # fmt: skip
    print(f"{'mode':<12}{'episodes/min':>14}{'wall s':>9}{'turns/ep':>10}{'commands':>10}{'failed':>8}")
    for label, row in (("sequential", base), ("mesh", ours)):
        print(
            f"{label:<12}{row['episodes_per_min']:>14.1f}{row['wall_s']:>9.1f}{row['mean_turns']:>10.2f}"
            f"{row['commands']:>10.0f}{row['failed']:>8.0f}"
        )
    print(f"mesh / sequential: x{speedup:.2f} (goal >= {GOAL_PER_SANDBOX} x {SANDBOXES} sandboxes = x{goal:.1f})")
    return {
        **{f"sequential_{k}": v for k, v in base.items()},
        **{f"mesh_{k}": v for k, v in ours.items()},
        "mesh_vs_sequential_speedup": speedup,
        "goal_speedup": goal,
        "sandboxes": SANDBOXES,
    }


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24, sys.argv[2] if len(sys.argv) > 2 else "tiny")
