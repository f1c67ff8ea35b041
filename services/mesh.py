"""The mesh of one run: policy server, sandbox pool, grader, rollout workers and learner, started together.

`run_episodes` spreads episode specs over the rollout workers and shows progress (`submit_episodes` and
`collect_episodes` are its two halves, for the pipelined driver); the driver, the validation gate and the demo all go
through it, so every episode anywhere is produced the same way. Starting the mesh shows progress too: the
tiny-agent's pretraining when its model is not built yet (minutes), then each actor group as it comes up.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from fieldkit.config import RunConfig
from fieldkit.gym.records import Episode
from fieldkit.gym.task import Task
from fieldkit.progress import Phase
from services.grader import Grader
from services.learner import start_learner
from services.policy.server import start_policy_server
from services.rollout import EpisodeSpec, RolloutWorker
from services.sandbox_pool import start_pools


@dataclass
class Mesh:
    cfg: RunConfig
    model_dir: str
    policy: Any
    pools: dict[str, Any]  # node id -> that node's SandboxPool
    grader: Any
    workers: list[Any]
    learner: Any

    def shutdown(self) -> None:
        ray.get([pool.close.remote() for pool in self.pools.values()])  # containers and mounts, not left to reap
        for actor in [*self.workers, self.grader, *self.pools.values(), self.learner, self.policy]:
            ray.kill(actor)


def start_mesh(cfg: RunConfig) -> Mesh:
    """Every actor of the run, started and warmed up (the learner from `model.init_adapter` when set)."""
    from fieldkit.training.lora_model import resolve_model_path

    with Phase(f"pretraining {cfg.model.name_or_path} (once: it is cached in {cfg.paths.models_dir})") as pretraining:
        model_dir = str(resolve_model_path(cfg.model, cfg.paths.models_dir, pretraining))
    with Phase("starting the mesh: learner, policy server (its engine), sandbox pools") as starting:
        starting(0, 3)
        learner = start_learner(cfg)
        starting(1, 3)
        policy = start_policy_server(cfg)
        starting(2, 3)
        pools = start_pools(cfg.sandbox)
        starting(3, 3)
    grader = Grader.remote(cfg)  # type: ignore[attr-defined]
    workers = [
        RolloutWorker.options(resources=cfg.resources.placement.get("rollout")).remote(cfg, model_dir, policy, grader)  # type: ignore[attr-defined]
        for _ in range(cfg.rollout.workers)
    ]
    return Mesh(cfg, model_dir, policy, pools, grader, workers, learner)


def episode_specs(
    tasks: Sequence[Task], *, k: int, adapter: str | None, temperature: float, seed: int, prefix: str
) -> list[EpisodeSpec]:
    """K rollouts of each task; each task's rollouts form one group. Seeds are a function of (seed, position)."""
    return [
        EpisodeSpec(
            task=task,
            episode_id=f"{prefix}-t{i:03d}-k{j}",
            group_id=f"{prefix}-t{i:03d}",
            adapter=adapter,
            temperature=temperature,
            seed=seed * 100_003 + i * k + j,
        )
        for i, task in enumerate(tasks)
        for j in range(k)
    ]


def submit_episodes(mesh: Mesh, specs: Sequence[EpisodeSpec]) -> list[Any]:
    """Start every spec on the workers (round-robin, one call per spec); returns their refs, in spec order."""
    workers = itertools.cycle(mesh.workers)
    return [next(workers).run_one.remote(spec) for spec in specs]


def collect_episodes(refs: Sequence[Any], label: str) -> list[Episode]:
    """Wait for submitted episodes with a live progress bar (gone when done: the caller prints what came of them);
    spec order is kept."""
    pending = {ref: i for i, ref in enumerate(refs)}
    results: list[Episode | None] = [None] * len(refs)
    with Phase(label, transient=True) as progress:
        progress(0, len(refs))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
            progress(len(refs) - len(pending), len(refs))
    return [e for e in results if e is not None]


def run_episodes(mesh: Mesh, specs: Sequence[EpisodeSpec], label: str) -> list[Episode]:
    """Run every spec on the workers and wait for all of them."""
    return collect_episodes(submit_episodes(mesh, specs), label)
