"""Fault injection through real actors on the tiny model: one training run in which each actor of the mesh is
killed with SIGKILL in the middle of a step — a rollout worker and the grader while episodes are in flight, a
sandbox from outside under an episode, the policy server (its vLLM engine restarts), the learner right as it takes
its batch. Every step must complete with each of its episodes exactly once, none failed, and the policy server must
serve the learner's latest adapter after recovering. A corrupt newest checkpoint is then skipped on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from conftest import kill_sandbox_from_outside, write_run_config

from fieldkit.config import RunConfig
from fieldkit.gym.corpus import load_corpus
from fieldkit.lineage import LineageStore
from fieldkit.runs import read_episodes
from services.mesh import Mesh, start_mesh
from services.train import TrainingRun

pytestmark = [pytest.mark.engine, pytest.mark.ray, pytest.mark.sandbox, pytest.mark.slow]

MAX_STEPS = 5
VICTIMS = {1: "rollout worker", 2: "sandbox", 3: "grader", 4: "policy server", 5: "learner"}  # step -> actor


def pid_of(actor: Any) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()), timeout=300)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@dataclass
class Injector:
    """Kills one actor per step, once that step is under way; what it did is kept for the assertions."""

    mesh: Mesh
    run_dir: Any
    pids: dict[str, int]
    done: dict[int, str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    @property
    def pool(self) -> Any:
        return next(iter(self.mesh.pools.values()))

    def leased(self) -> list[str]:
        return ray.get(self.pool.__ray_call__.remote(lambda pool: list(pool.leases)))

    def strike(self, step: int) -> None:
        try:
            victim = VICTIMS[step]
            if victim == "learner":  # its batch is built right after the episodes are on disk
                wait_for(lambda: self.run_dir.step_episodes(step).exists(), f"step {step}'s episodes")
                os.kill(self.pids["learner"], signal.SIGKILL)
            else:
                wait_for(lambda: bool(self.leased()), f"an episode of step {step} in flight")
                if victim == "sandbox":
                    lease = self.leased()[0]
                    kill_sandbox_from_outside(ray.get(self.pool.describe_lease.remote(lease)))
                else:
                    os.kill(self.pids[victim], signal.SIGKILL)
            self.done[step] = victim
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.errors.append(exc)


class FaultyRun(TrainingRun):
    """The driver, with the injector started as each step's rollouts begin (the first time only)."""

    injector: Injector

    def _rollouts(self, step: int, walls: dict[str, float]) -> list:
        if step in VICTIMS and step not in self.injector.done:
            threading.Thread(target=self.injector.strike, args=(step,), daemon=True).start()
        return super()._rollouts(step, walls)


@dataclass
class Outcome:
    run: FaultyRun
    injector: Injector
    message: str
    pids_before: dict[str, int]
    pids_after: dict[str, int]
    pool_stats: Any
    served: list[Any]


def actors(mesh: Mesh) -> dict[str, Any]:
    return {"rollout worker": mesh.workers[0], "grader": mesh.grader, "policy server": mesh.policy,
            "learner": mesh.learner}  # fmt: skip


@pytest.fixture(scope="module")
def faulted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("faults")
    cfg = RunConfig.from_yaml(
        # 12 training tasks, 2 a step: the pool cannot saturate (and stop the run) within 5 steps
        write_run_config(
            tmp, "faults", MAX_STEPS, 12, rollout={"workers": 2, "max_turns": 3}, eval={"every_n_steps": 5}
        )
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)  # the tests' own cluster
    try:
        mesh = start_mesh(cfg)
        try:
            tasks, split = load_corpus(cfg.paths.corpus_dir)
            run = FaultyRun(cfg, mesh, {t.task_id: t for t in tasks}, split.train, split.validation)
            before = {name: pid_of(actor) for name, actor in actors(mesh).items()}
            run.injector = Injector(mesh, run.dir, before)
            message = run.run(run.start(resume=False))
            after = {name: pid_of(actor) for name, actor in actors(mesh).items()}
            pool = next(iter(mesh.pools.values()))
            # the sandbox may die just after its short episode gave it back: idle, it is found by the health check
            # the pool runs every 30 s, run here now (a leased one is replaced at release)
            ray.get(pool.check_health.remote())
            stats = ray.get(pool.stats.remote())
            served = ray.get(mesh.policy.adapters.remote())
        finally:
            mesh.shutdown()
        yield Outcome(run, run.injector, message, before, after, stats, served)
    finally:
        ray.shutdown()


def test_every_actor_was_killed_mid_step_and_restarted(faulted: Outcome) -> None:
    assert not faulted.injector.errors, faulted.injector.errors
    assert faulted.injector.done == VICTIMS
    for name, pid in faulted.pids_before.items():
        assert faulted.pids_after[name] != pid, f"the {name} still runs in its first process"
    assert faulted.pool_stats.replaced >= 1  # the sandbox killed from outside was replaced


def test_each_step_completed_with_each_episode_once_and_none_failed(faulted: Outcome) -> None:
    assert faulted.message == f"finished {MAX_STEPS} steps"
    run_dir = faulted.run.dir
    for step in range(1, MAX_STEPS + 1):
        episodes = read_episodes(run_dir.step_episodes(step))
        ids = [e.episode_id for e in episodes]
        assert sorted(ids) == sorted({f"s{step:04d}-t{t:03d}-k{k}" for t in range(2) for k in range(2)}), ids
        failed = {e.episode_id: e.failure for e in episodes if e.stop_reason == "failed"}
        assert not failed, f"step {step} ({VICTIMS[step]} killed): {failed}"
        assert all(e.grade is not None and e.reward is not None for e in episodes)
        metrics = json.loads(run_dir.step_metrics(step).read_text())
        assert "learner.loss" in metrics, f"step {step} has no learner step"
    trials = [t.trial_id for t in LineageStore(faulted.run.cfg.paths.lineage_db).trials("faults")]
    assert trials == ["faults/gate-0000", *[f"faults/step-{s:04d}" for s in range(1, 6)], "faults/gate-0005"]


def test_the_policy_server_serves_the_learners_latest_adapter_after_recovery(faulted: Outcome) -> None:
    run_dir = faulted.run.dir
    for step in range(1, MAX_STEPS + 1):
        metrics = json.loads(run_dir.step_metrics(step).read_text())
        assert metrics["policy.published_version"] == metrics["policy.served_version"] == step
    # rolled out by the previous step's adapter, also right after the policy server came back (step 4)
    for step in range(2, MAX_STEPS + 1):
        assert {e.policy_version for e in read_episodes(run_dir.step_episodes(step))} == {step - 1}
    newest = max(faulted.served, key=lambda adapter: adapter.version)
    assert newest.version == MAX_STEPS and newest.probe is not None and newest.probe.passed
    assert faulted.pool_stats.leased == 0  # what the killed worker held was given back


def test_resume_skips_a_corrupt_newest_checkpoint_and_uses_the_one_before(
    faulted: Outcome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a copy of the faulted run: truncating the newest checkpoint's optimizer state must not lose the run."""
    source = faulted.run.dir.root
    copy = tmp_path / "runs" / "faults"
    shutil.copytree(source, copy)
    optimizer = copy / "checkpoints" / f"{MAX_STEPS:06d}" / "learner" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    cfg = faulted.run.cfg.model_copy(update={"paths": faulted.run.cfg.paths.model_copy(
        update={"runs_dir": tmp_path / "runs", "lineage_db": tmp_path / "runs" / "lineage.db"})})  # fmt: skip
    mesh = start_mesh(cfg)  # on the cluster of the faulted run, whose mesh is gone
    try:
        tasks, split = load_corpus(cfg.paths.corpus_dir)
        run = TrainingRun(cfg, mesh, {t.task_id: t for t in tasks}, split.train, split.validation)
        assert run.start(resume=True) == MAX_STEPS  # step 4's checkpoint: step 5 is next
        assert run.adapter is not None and run.served_version == run.adapter.version == MAX_STEPS - 1
        assert json.loads(run.dir.latest.read_text())["step"] == MAX_STEPS - 1
    finally:
        mesh.shutdown()
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "is unusable, trying the one before" in printed and "optimizer.pt" in printed, printed
