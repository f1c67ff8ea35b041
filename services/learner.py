"""Learner: the Ray actor that keeps base + LoRA resident and turns TrainBatches into adapter versions.

A thin shell around `fieldkit.training.trainer.LoraPolicyTrainer`: the model is loaded once and stays in memory
for the whole run (the reference reloaded a 15 GB base for 124 s at every step). Calls run one at a time, in order.

A learner whose process dies (OOM, kill -9) is restarted by Ray from the run's latest checkpoint, and the call it
was in is retried there: a step interrupted half way is recomputed from the state it started from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from fieldkit.config import RunConfig
from fieldkit.rl.records import TrainBatch
from fieldkit.runs import RunDir
from fieldkit.training.records import AdapterRef
from fieldkit.training.sft import SftExample
from services.logs import capture_actor_output

MAX_RESTARTS = 3  # a learner that dies at every start (a checkpoint that no longer fits) must not restart forever


@ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=-1)
class Learner:
    def __init__(self, config: RunConfig) -> None:
        from fieldkit.training.trainer import LoraPolicyTrainer

        capture_actor_output("learner")
        self._trainer = LoraPolicyTrainer(config)  # starts from model.init_adapter when set
        # A first start leaves resuming to the driver, which picks a checkpoint it can read; a restart returns to
        # the one the driver last marked as latest (before its first checkpoint: the start, as on a first start).
        found = (
            RunDir(config.run_dir).latest_checkpoint()
            if ray.get_runtime_context().was_current_actor_reconstructed
            else None
        )
        if found is not None:
            self._trainer.load_state(found[1] / "learner")

    def step(self, batch: TrainBatch) -> dict[str, float]:
        """One RL step; metrics: loss, policy_loss, kl, entropy, grad_norm, clip_fraction, weight_delta_l2/max,
        tokens_per_s and the batch's sizes."""
        return self._trainer.step(batch)

    def publish(self, version: int) -> AdapterRef:
        """Write adapter `version` under runs/<run>/adapters/ with its probe; hand the ref to the policy server."""
        return self._trainer.publish(version)

    def warm_start(self, examples: list[SftExample]) -> dict[str, float]:
        """LoRA SFT before RL; the result becomes the KL reference."""
        return self._trainer.warm_start(examples)

    def steps_done(self) -> int:
        return self._trainer.steps_done

    def save_state(self, directory: str) -> None:
        self._trainer.save_state(Path(directory))

    def load_state(self, directory: str) -> int:
        """Resume from a checkpoint; returns the number of steps it had done."""
        self._trainer.load_state(Path(directory))
        return self._trainer.steps_done


def start_learner(config: RunConfig, *, name: str | None = None) -> Any:
    """Create the Learner actor with the config's GPU share and wait until its model is loaded."""
    gpu_fraction = config.resources.learner_gpu_fraction if config.resources.num_gpus > 0 else 0.0
    learner = Learner.options(name=name, num_gpus=gpu_fraction).remote(config)  # type: ignore[attr-defined]
    ray.get(learner.steps_done.remote())  # raises here, not at the first step, if the model cannot load
    return learner
