"""Learner: the Ray actor that keeps base + LoRA resident and turns TrainBatches into adapter versions.

A thin shell around `fieldkit.training.trainer.LoraPolicyTrainer`: the model is loaded once and stays in memory
for the whole run (the reference reloaded a 15 GB base for 124 s at every step). Calls run one at a time, in order.

A learner whose process dies (OOM, kill -9) is restarted by Ray from the run's latest checkpoint, and the call it
was in is retried there. Every call names the driver step it is for, and the learner refuses one its state does not
hold (StepMismatchError): the retried `publish(n)` of a learner now back at step n-1 would otherwise publish the
weights before step n's update as version n. `LearnerSession`, the driver's side, answers such a refusal by
re-applying what the restart lost (step n's update, or the SFT warm start) and calling again; the update is
deterministic given the checkpoint and the batch, so the state is the lost one exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import ray

from fieldkit.config import RunConfig
from fieldkit.rl.records import TrainBatch
from fieldkit.runs import RunStore
from fieldkit.storage import Storage
from fieldkit.training.records import AdapterRef
from fieldkit.training.sft import SftExample
from fieldkit.training.trainer import StepMismatchError
from services.logs import capture_actor_output

MAX_RESTARTS = 3  # a learner that dies at every start (a checkpoint that no longer fits) must not restart forever
PROGRESS_POLL_S = 1.0  # how often the driver reads the warm start's progress


# "progress": one more thread, for `sft_progress` alone, so the driver can read it while a warm start runs; every other
# method stays in the default group, one call at a time, in order.
@ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=-1, concurrency_groups={"progress": 1})
class Learner:
    def __init__(self, config: RunConfig) -> None:
        from fieldkit.training.trainer import LoraPolicyTrainer

        capture_actor_output("learner")
        self._sft_progress = (0, 0)  # (optimizer steps done, total) of the warm start under way
        self._trainer = LoraPolicyTrainer(config)  # starts from model.init_adapter when set
        # A first start leaves resuming to the driver, which picks a checkpoint it can read; a restart returns to
        # the one the driver last marked as latest (before its first checkpoint: the start, as on a first start).
        self._store = RunStore(Storage(config.storage_root, config.paths.node_cache), config.run_name)
        found = self._store.latest_checkpoint() if ray.get_runtime_context().was_current_actor_reconstructed else None
        if found is not None:
            self._trainer.load_state(self._store.storage.fetch(f"{found[1]}/learner"))
        self._gauges = _Gauges()
        self._gauges.step.set(self._trainer.at_step)

    def step(self, batch: TrainBatch, step: int) -> dict[str, float]:
        """Step `step`'s update (the state must be at step - 1); metrics: loss, policy_loss, kl, entropy, grad_norm,
        clip_fraction, ratio_mean/min/max, is_masked_frac, mismatch_kl, weight_delta_l2/max, tokens_per_s and the
        batch's sizes ({} for a batch with nothing to train on)."""
        metrics = self._trainer.step(batch, step)
        self._gauges.update(self._trainer.at_step, metrics)
        return metrics

    def publish(self, version: int) -> AdapterRef:
        """Upload adapter `version` (the state of step `version`) to run storage; its ref carries the storage
        location and the probe."""
        storage, key = self._store.storage, self._store.adapter(self._trainer.adapter_name(version))
        staging = storage.staging(key)
        try:
            ref = self._trainer.publish(version, staging / "adapter")
            return ref.model_copy(update={"path": storage.put_dir(staging / "adapter", key)})
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def warm_start(self, examples: list[SftExample]) -> dict[str, float]:
        """LoRA SFT before RL; the result is the state of step 0 and the KL reference."""
        metrics = self._trainer.warm_start(examples, lambda done, total: setattr(self, "_sft_progress", (done, total)))
        self._gauges.step.set(self._trainer.at_step)
        return metrics

    @ray.method(concurrency_group="progress")
    def sft_progress(self) -> tuple[int, int]:
        """(optimizer steps done, total) of the warm start under way (or the last one)."""
        return self._sft_progress

    def at_step(self) -> int:
        return self._trainer.at_step

    def save_state(self, key: str, step: int) -> None:
        """Upload the learner state of `step` to run storage as version `key`."""
        staging = self._store.storage.staging(key)
        try:
            self._trainer.save_state(staging / "state", step)
            self._store.storage.put_dir(staging / "state", key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load_state(self, key: str) -> int:
        """Resume from the checkpoint at `key` in run storage; returns the step it holds."""
        self._trainer.load_state(self._store.storage.fetch(key))
        self._gauges.step.set(self._trainer.at_step)
        return self._trainer.at_step


GAUGED_FIGURES = ("loss", "kl", "grad_norm", "tokens_per_s", "step_s")  # of a step's metrics, as fieldkit_learner_*


class _Gauges:
    """What Prometheus (and the Grafana dashboard in deploy/grafana/) sees of the learner: the step its state holds,
    and the last update's figures (the full set is in each step's metrics.json)."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self.step = Gauge("fieldkit_learner_step", description="the training step the learner's state holds")
        self.figures = {
            name: Gauge(f"fieldkit_learner_{name}", description=f"the last update's {name}") for name in GAUGED_FIGURES
        }

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.step.set(step)
        for name, gauge in self.figures.items():
            if name in metrics:
                gauge.set(metrics[name])


class LearnerSession:
    """The driver's calls to the Learner actor, each for a step; a refusal after a restart is repaired and retried.

    It keeps what it takes to redo the work a restart can lose: the latest step's batch (the restarted learner is at
    the checkpoint before it) and the SFT examples (before checkpoint 0 a restart starts from scratch).
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self._update: tuple[int, TrainBatch] | None = None  # the latest step and its batch
        self._sft: list[SftExample] | None = None

    def warm_start(
        self, examples: list[SftExample], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, float]:
        """The SFT warm start; `progress(done, total)` follows its optimizer steps (polled each second)."""
        self._sft = examples
        running = self.actor.warm_start.remote(examples)
        while progress is not None and not ray.wait([running], timeout=PROGRESS_POLL_S)[0]:
            progress(*ray.get(self.actor.sft_progress.remote()))
        return ray.get(running)

    def step(self, batch: TrainBatch, step: int) -> dict[str, float]:
        metrics = self._call(step - 1, lambda: self.actor.step.remote(batch, step))
        self._update = (step, batch)
        return metrics

    def publish(self, version: int) -> AdapterRef:
        return self._call(version, lambda: self.actor.publish.remote(version))

    def save_state(self, key: str, step: int) -> None:
        self._call(step, lambda: self.actor.save_state.remote(key, step))

    def load_state(self, key: str) -> int:
        return ray.get(self.actor.load_state.remote(key))

    def _call(self, step: int, submit: Any) -> Any:
        """ray.get(submit()), which needs the learner at `step`; after a refusal, bring it there and call again."""
        try:
            return ray.get(submit())
        except StepMismatchError:
            self._redo(step)
            return ray.get(submit())

    def _redo(self, step: int) -> None:
        at = ray.get(self.actor.at_step.remote())
        if self._update is not None and self._update[0] == step and at == step - 1:
            ray.get(self.actor.step.remote(self._update[1], step))
        elif step == 0 and at == -1 and self._sft is not None:
            ray.get(self.actor.warm_start.remote(self._sft))
        else:
            raise StepMismatchError(f"the learner is at step {at}; the driver cannot bring it to step {step}")


def start_learner(config: RunConfig, *, name: str | None = None) -> Any:
    """Create the Learner actor with the config's GPU share and wait until its model is loaded."""
    gpu_fraction = config.resources.learner_gpu_fraction if config.resources.num_gpus > 0 else 0.0
    resources = config.resources.placement.get("learner")
    learner = Learner.options(name=name, num_gpus=gpu_fraction, resources=resources).remote(config)  # type: ignore[attr-defined]
    ray.get(learner.at_step.remote())  # raises here, not at the first step, if the model cannot load
    return learner
