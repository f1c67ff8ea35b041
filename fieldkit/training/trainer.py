"""The learner's work without Ray: base + LoRA resident, one RL step per TrainBatch, publish, checkpoint state.

`services/learner.py` is the Ray actor around it; tests and benchmarks drive it directly.

The state knows which driver step it holds (`at_step`: -1 before the SFT warm start a run asks for, 0 at the start,
n after step n's update), and every call that depends on it says which step it is for: a call that does not match
raises StepMismatchError instead of, say, publishing the weights of step n-1 as version n after a restart.

RL forward passes run in eval mode (no LoRA dropout: the ratio and the KL would carry dropout noise); SFT trains
with its configured dropout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldkit.config import RunConfig
from fieldkit.rl.losses import Denominators, aggregate, kl_k3, mismatch_weight, policy_loss, ratio_segments
from fieldkit.rl.records import TrainBatch
from fieldkit.storage import fetch_dir
from fieldkit.training.logprobs import token_logprobs
from fieldkit.training.lora_model import adapter_rank, load_lora_model, resolve_model_path, save_adapter
from fieldkit.training.microbatch import MicroBatch, collate, plan_micro_batches
from fieldkit.training.records import AdapterRef
from fieldkit.training.reference import LoraReference
from fieldkit.training.weight_delta import WeightDeltaTracker

if TYPE_CHECKING:
    from fieldkit.training.sft import SftExample


class StepMismatchError(RuntimeError):
    """A learner call for a step its state does not hold (a restarted learner is back at its last checkpoint)."""


class LoraPolicyTrainer:
    def __init__(self, cfg: RunConfig, *, device: str | None = None) -> None:
        import torch

        self.cfg = cfg
        self.device = device or ("cuda" if cfg.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.seed)
        # a model in run storage (s3://...) is copied into this node's cache once
        self.model_path = str(fetch_dir(resolve_model_path(cfg.model, cfg.paths.models_dir), cfg.paths.node_cache))
        self.model, self.tokenizer = load_lora_model(
            self.model_path,
            cfg.lora,
            dtype=self.dtype,
            device=self.device,
            adapter_dir=cfg.model.init_adapter,  # an SFT warm start; None = a fresh adapter
        )
        self.model.eval()  # no dropout in RL passes; eval mode still computes gradients
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.algorithm.learning_rate)
        # the reference is the adapter the run starts from; without a KL term it is never read
        self.reference = LoraReference(self.model) if cfg.algorithm.kl_beta > 0 else None
        self.delta = WeightDeltaTracker(self.model)
        self.at_step = -1 if cfg.sft.warm_start else 0

    def expect_step(self, what: str, step: int) -> None:
        if self.at_step != step:
            raise StepMismatchError(f"{what} needs the learner at step {step}; its state is at step {self.at_step}")

    @property
    def dtype(self) -> str:
        """model.learner_dtype; auto = the engine's dtype on GPU, float32 on CPU (bf16 is emulated there)."""
        if self.cfg.model.learner_dtype != "auto":
            return self.cfg.model.learner_dtype
        return self.cfg.model.resolved_dtype(on_gpu=True) if self.device != "cpu" else "float32"

    @property
    def norm_length(self) -> int:
        """Dr.GRPO's constant L_max: configured, or the most tokens an episode can sample."""
        return self.cfg.algorithm.norm_length or self.cfg.rollout.max_turns * self.cfg.turn_token_limit

    def step(self, batch: TrainBatch, step: int) -> dict[str, float]:
        """Driver step `step`'s update: one optimizer step per epoch on the whole batch (micro-batches accumulate
        gradients); returns metrics. A batch with nothing to train on moves the state to `step` unchanged ({})."""
        import torch

        self.expect_step(f"step({step})", step - 1)
        if not batch.sequences or batch.n_assistant_tokens == 0:
            self.at_step = step
            return {}
        algo = self.cfg.algorithm
        started = time.perf_counter()
        plan = plan_micro_batches([len(s.token_ids) for s in batch.sequences], algo.micro_batch_tokens)
        micro = [collate([batch.sequences[i] for i in rows], self.device) for rows in plan]
        counts = Denominators(batch.n_assistant_tokens, len(batch.sequences), self.norm_length)
        reference_logp = [self._reference_logp(mb) for mb in micro] if self.reference else [None] * len(micro)
        # π_old per micro-batch: the first epoch's forward runs before any update, so its log-probs (detached) are
        # the learner's log-probs before the update, without an extra pass
        before: list[Any] = [None] * len(micro)
        first = {"ratio_min": math.inf, "ratio_max": -math.inf, "ratio_sum": 0.0, "mismatch_kl": 0.0, "masked": 0.0}
        self.delta.mark()
        for _ in range(algo.epochs_per_step):
            self.optimizer.zero_grad(set_to_none=True)
            sums = dict.fromkeys(("loss", "policy_loss", "kl", "entropy", "clipped"), 0.0)
            for i, (mb, ref_logp_bt) in enumerate(zip(micro, reference_logp, strict=True)):
                before[i] = self._accumulate(mb, before[i], ref_logp_bt, counts, sums, first)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, algo.grad_clip))
            self.optimizer.step()
        self.at_step = step
        elapsed = time.perf_counter() - started
        tokens = batch.n_assistant_tokens
        return {
            "loss": sums["loss"],
            "policy_loss": sums["policy_loss"],
            "kl": sums["kl"] / tokens,
            "entropy": sums["entropy"] / tokens,
            "grad_norm": grad_norm,
            "clip_fraction": sums["clipped"] / tokens,
            "ratio_mean": first["ratio_sum"] / tokens,
            "ratio_min": first["ratio_min"],
            "ratio_max": first["ratio_max"],
            "is_masked_frac": first["masked"] / tokens,
            "mismatch_kl": first["mismatch_kl"] / tokens,
            **self.delta.measure(),
            "tokens_per_s": batch.n_tokens * algo.epochs_per_step / elapsed,
            "tokens": float(batch.n_tokens),
            "assistant_tokens": float(tokens),
            "sequences": float(len(batch.sequences)),
            "micro_batches": float(len(micro)),
            "step_s": elapsed,
        }

    def _accumulate(
        self,
        mb: MicroBatch,
        before_bt: Any,
        ref_logp_bt: Any,
        counts: Denominators,
        sums: dict[str, float],
        first: dict[str, float],
    ) -> Any:
        """Forward and backward one micro-batch; its loss is its share of the batch's, so gradients add up.

        `before_bt` is the micro-batch's log-probs before the update, None in the first epoch (this forward's are
        then, and the before-update statistics go to `first`); returns them for the next epoch."""
        algo = self.cfg.algorithm
        logp_bt, entropy_bt = token_logprobs(
            self.model, mb.input_ids_bt, mb.attention_bt, temperature_bt=mb.temperature_bt, with_entropy=True
        )
        is_first = before_bt is None
        if is_first:
            before_bt = logp_bt.detach()
        old_logp_bt = before_bt if algo.behaviour_logprobs == "learner" else mb.behaviour_logp_bt
        segments_bt = ratio_segments(algo.loss, mb.turn_bt)
        weight_bt, corrected_bt = mismatch_weight(
            algo.is_correction,  # "none" with behaviour_logprobs: engine (the config's rule)
            learner_logp_bt=before_bt,
            engine_logp_bt=mb.behaviour_logp_bt,
            mask_bt=mb.mask_bt,
            segments_bt=segments_bt,
            cap=algo.is_cap,
        )
        pg_bt, clipped_bt = policy_loss(
            algo.loss,
            logp_bt=logp_bt,
            old_logp_bt=old_logp_bt,
            advantages_bt=mb.advantages_bt,
            weight_bt=weight_bt,
            mask_bt=mb.mask_bt,
            turn_bt=mb.turn_bt,
            clip_scale_bt=mb.clip_scale_bt,
            eps_low=algo.clip_eps_low,
            eps_high=algo.clip_eps_high,
            dual_clip_c=algo.dual_clip_c,
        )
        policy = aggregate(pg_bt, mb.mask_bt, algo.aggregation, counts)
        loss = policy
        if ref_logp_bt is not None:
            kl_bt = kl_k3(logp_bt, ref_logp_bt)
            loss = loss + algo.kl_beta * aggregate(kl_bt, mb.mask_bt, algo.aggregation, counts)
            sums["kl"] += float((kl_bt.detach() * mb.mask_bt).sum())
        loss.backward()
        assert entropy_bt is not None
        sums["loss"] += float(loss.detach())
        sums["policy_loss"] += float(policy.detach())
        sums["entropy"] += float((entropy_bt * mb.mask_bt).sum())
        sums["clipped"] += float(clipped_bt.sum())
        if is_first:
            sampled = mb.mask_bt.bool()
            ratio_t = (logp_bt.detach() - old_logp_bt)[sampled].exp()  # π_θ / π_old before the update
            first["ratio_sum"] += float(ratio_t.sum())
            first["ratio_min"] = min(first["ratio_min"], float(ratio_t.min()))
            first["ratio_max"] = max(first["ratio_max"], float(ratio_t.max()))
            # KL(engine || learner) on the engine's samples (k3): how far the two compute the same policy apart
            first["mismatch_kl"] += float(kl_k3(mb.behaviour_logp_bt, before_bt)[sampled].sum())
            first["masked"] += float(corrected_bt.sum())
        return before_bt

    def _reference_logp(self, mb: MicroBatch) -> Any:
        assert self.reference is not None
        with self.reference.swapped_in(self.model):
            logp_bt, _ = token_logprobs(self.model, mb.input_ids_bt, mb.attention_bt, temperature_bt=mb.temperature_bt)
        return logp_bt

    def adapter_name(self, version: int) -> str:
        """Each version is its own adapter name, so an episode never mixes two."""
        return f"{self.cfg.run_name}-v{version}"

    def publish(self, version: int, directory: Path | None = None) -> AdapterRef:
        """Write the adapter of step `version` (replacing an older copy of the same version) and its probe; return
        the ref. Refused unless the state holds that step."""
        from fieldkit.training.probe import build_probe, probe_sequence

        self.expect_step(f"publish({version})", version)
        name = self.adapter_name(version)
        target = directory or self.cfg.run_dir / "adapters" / name
        save_adapter(self.model, target)
        probe = build_probe(self.model, *probe_sequence(self.tokenizer))
        return AdapterRef(
            name=name, version=version, path=str(target.resolve()), rank=adapter_rank(self.model), probe=probe
        )

    def warm_start(
        self, examples: Sequence[SftExample], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, float]:
        """LoRA SFT of the resident adapter, the state of step 0; it then becomes the KL reference (as the reference
        run's SFT-init adapter did) and the optimizer starts fresh (the SFT moments belong to another objective).
        `progress(done, total)` follows its optimizer steps."""
        import torch

        from fieldkit.training.sft import run_sft

        metrics = run_sft(
            self.model,
            self.tokenizer,
            examples,
            self.cfg.sft,
            seed=self.cfg.seed,
            device=self.device,
            progress=progress,
        )
        self.model.eval()  # SFT trained with dropout; RL passes run without
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.algorithm.learning_rate)
        self.reference = LoraReference(self.model) if self.cfg.algorithm.kl_beta > 0 else None
        self.at_step = max(self.at_step, 0)  # a run's SFT warm start is its step 0
        return metrics

    def save_state(self, directory: Path, step: int) -> None:
        """Adapter, optimizer, reference, RNG and the step under `directory` (replaced whole; see
        training.checkpoint). Refused unless the state holds `step`."""
        from fieldkit.training.checkpoint import save_state

        self.expect_step(f"save_state({step})", step)
        save_state(self, directory)

    def load_state(self, directory: Path) -> None:
        from fieldkit.training.checkpoint import load_state

        load_state(self, directory)
