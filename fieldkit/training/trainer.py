"""The learner's work without Ray: base + LoRA resident, one RL step per TrainBatch, publish, checkpoint state.

`services/learner.py` is the Ray actor around it; tests and benchmarks drive it directly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldkit.config import RunConfig
from fieldkit.rl.losses import Denominators, aggregate, kl_k3, policy_loss
from fieldkit.rl.records import TrainBatch
from fieldkit.training.logprobs import token_logprobs
from fieldkit.training.lora_model import adapter_rank, load_lora_model, resolve_model_path, save_adapter
from fieldkit.training.microbatch import MicroBatch, collate, plan_micro_batches
from fieldkit.training.records import AdapterRef
from fieldkit.training.reference import LoraReference
from fieldkit.training.weight_delta import WeightDeltaTracker

if TYPE_CHECKING:
    from fieldkit.training.sft import SftExample


class LoraPolicyTrainer:
    def __init__(self, cfg: RunConfig, *, device: str | None = None) -> None:
        import torch

        self.cfg = cfg
        self.device = device or ("cuda" if cfg.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        torch.manual_seed(cfg.seed)
        self.model_path = resolve_model_path(cfg.model, cfg.paths.models_dir)
        self.model, self.tokenizer = load_lora_model(
            self.model_path,
            cfg.lora,
            dtype=self.dtype,
            device=self.device,
            adapter_dir=cfg.model.init_adapter,  # an SFT warm start; None = a fresh adapter
        )
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.algorithm.learning_rate)
        # the reference is the adapter the run starts from; without a KL term it is never read
        self.reference = LoraReference(self.model) if cfg.algorithm.kl_beta > 0 else None
        self.delta = WeightDeltaTracker(self.model)
        self.steps_done = 0

    @property
    def dtype(self) -> str:
        """model.learner_dtype; auto = the engine's dtype on GPU, float32 on CPU (bf16 is emulated there)."""
        if self.cfg.model.learner_dtype != "auto":
            return self.cfg.model.learner_dtype
        return self.cfg.model.resolved_dtype(on_gpu=True) if self.device != "cpu" else "float32"

    @property
    def norm_length(self) -> int:
        """Dr.GRPO's constant L_max: configured, or the most tokens an episode can sample."""
        algo, rollout = self.cfg.algorithm, self.cfg.rollout
        return algo.norm_length or rollout.max_turns * (algo.think_cap_tokens or rollout.max_tokens_per_turn)

    def step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimizer step per epoch on the whole batch (micro-batches accumulate gradients); returns metrics."""
        import torch

        if not batch.sequences or batch.n_assistant_tokens == 0:
            raise ValueError(
                f"the batch has no sampled tokens to train on ({len(batch.sequences)} sequences, "
                f"{batch.dropped_groups} of {batch.groups} groups dropped for zero signal); skip the step"
            )
        algo = self.cfg.algorithm
        started = time.perf_counter()
        plan = plan_micro_batches([len(s.token_ids) for s in batch.sequences], algo.micro_batch_tokens)
        micro = [collate([batch.sequences[i] for i in rows], self.device) for rows in plan]
        counts = Denominators(batch.n_assistant_tokens, len(batch.sequences), self.norm_length)
        reference_logp = [self._reference_logp(mb) for mb in micro] if self.reference else [None] * len(micro)
        self.delta.mark()
        for _ in range(algo.epochs_per_step):
            self.optimizer.zero_grad(set_to_none=True)
            sums = dict.fromkeys(("loss", "policy_loss", "kl", "entropy", "clipped"), 0.0)
            for mb, ref_logp_bt in zip(micro, reference_logp, strict=True):
                self._accumulate(mb, ref_logp_bt, counts, sums)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, algo.grad_clip))
            self.optimizer.step()
        self.steps_done += 1
        elapsed = time.perf_counter() - started
        tokens = batch.n_assistant_tokens
        return {
            "loss": sums["loss"],
            "policy_loss": sums["policy_loss"],
            "kl": sums["kl"] / tokens,
            "entropy": sums["entropy"] / tokens,
            "grad_norm": grad_norm,
            "clip_fraction": sums["clipped"] / tokens,
            **self.delta.measure(),
            "tokens_per_s": batch.n_tokens * algo.epochs_per_step / elapsed,
            "tokens": float(batch.n_tokens),
            "assistant_tokens": float(tokens),
            "sequences": float(len(batch.sequences)),
            "micro_batches": float(len(micro)),
            "step_s": elapsed,
        }

    def _accumulate(self, mb: MicroBatch, ref_logp_bt: Any, counts: Denominators, sums: dict[str, float]) -> None:
        """Forward and backward one micro-batch; its loss is its share of the batch's, so gradients add up."""
        algo = self.cfg.algorithm
        logp_bt, entropy_bt = token_logprobs(self.model, mb.input_ids_bt, mb.attention_bt, with_entropy=True)
        pg_bt, clipped_bt = policy_loss(
            algo.loss,
            logp_bt=logp_bt,
            behaviour_logp_bt=mb.behaviour_logp_bt,
            advantages_bt=mb.advantages_bt,
            mask_bt=mb.mask_bt,
            turn_bt=mb.turn_bt,
            clip_scale_bt=mb.clip_scale_bt,
            eps_low=algo.clip_eps_low,
            eps_high=algo.clip_eps_high,
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

    def _reference_logp(self, mb: MicroBatch) -> Any:
        assert self.reference is not None
        with self.reference.swapped_in(self.model):
            logp_bt, _ = token_logprobs(self.model, mb.input_ids_bt, mb.attention_bt)
        return logp_bt

    def publish(self, version: int, directory: Path | None = None) -> AdapterRef:
        """Write the adapter (replacing an older copy of the same version) and its probe; return the ref."""
        from fieldkit.training.probe import build_probe, probe_sequence

        name = f"{self.cfg.run_name}-v{version}"
        target = directory or self.cfg.run_dir / "adapters" / name
        save_adapter(self.model, target)
        self.model.eval()
        try:
            probe = build_probe(self.model, *probe_sequence(self.tokenizer))
        finally:
            self.model.train()
        return AdapterRef(
            name=name, version=version, path=str(target.resolve()), rank=adapter_rank(self.model), probe=probe
        )

    def warm_start(self, examples: Sequence[SftExample]) -> dict[str, float]:
        """LoRA SFT of the resident adapter; it then becomes the KL reference (as the reference run's SFT-init
        adapter did) and the optimizer starts fresh (the SFT moments belong to another objective)."""
        import torch

        from fieldkit.training.sft import run_sft

        metrics = run_sft(self.model, self.tokenizer, examples, self.cfg.sft, seed=self.cfg.seed, device=self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.algorithm.learning_rate)
        self.reference = LoraReference(self.model) if self.cfg.algorithm.kl_beta > 0 else None
        return metrics

    def save_state(self, directory: Path) -> None:
        """Adapter, optimizer, reference and RNG under `directory` (replaced whole; see training.checkpoint)."""
        from fieldkit.training.checkpoint import save_state

        save_state(self, directory)

    def load_state(self, directory: Path) -> None:
        from fieldkit.training.checkpoint import load_state

        load_state(self, directory)
