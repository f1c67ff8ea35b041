"""What a plan is asked for: the training method, the shapes of a step, the rollout engine beside it, the margins.

Defaults follow each method's usual recipe (see REFERENCE.md §5): full and LoRA runs in bf16 with AdamW and no
recompute; QLoRA with NF4 double-quantised weights, paged 8-bit AdamW and gradient checkpointing (PEFT's
prepare_model_for_kbit_training turns it on). Fields left as None take those method defaults in `resolved()`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from fieldkit.capabilities.errors import from_validation
from fieldkit.config import LoraConfig, RunConfig

Method = Literal["full", "lora", "qlora"]
DEFAULT_TARGETS: list[str] = LoraConfig.model_fields["target_modules"].default_factory()  # type: ignore[misc,call-arg]


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("lora", description="full fine-tuning, LoRA on bf16 weights, or LoRA on NF4 weights")
    seq: PositiveInt = Field(2048, description="tokens per sequence in a training micro-batch")
    micro_batch: PositiveInt = Field(1, description="sequences per micro-batch on each data-parallel rank")
    rank: PositiveInt = Field(LoraConfig.model_fields["rank"].default, description="LoRA rank (RunConfig's default)")
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    lora_dropout: float = Field(
        LoraConfig.model_fields["dropout"].default, ge=0, lt=1, description="> 0: PEFT keeps a dropped copy per input"
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="weights and activations")
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit"] | None = Field(
        None, description="None: adamw, or paged_adamw8bit for qlora"
    )
    double_quant: bool = Field(True, description="QLoRA double quantisation: 0.127 instead of 0.5 bit/param")
    recompute: Literal["none", "selective", "full"] | None = Field(None, description="None: full for qlora, else none")
    flash_attention: bool = Field(True, description="FlashAttention/SDPA: no s^2 attention matrix is stored")
    kernels: Literal["fused", "eager"] = Field(
        "fused", description="fused norms (Megatron, Liger) or Hugging Face's eager RMSNorm (stores an fp32 copy)"
    )
    device: Literal["cuda", "cpu"] = Field(
        "cuda", description="cpu: PyTorch's CPU dropout keeps its mask in the activation dtype, CUDA's in 1 byte"
    )
    grads: Literal["persistent", "on_demand"] = Field(
        "persistent", description="persistent grad buffers (DDP/FSDP/Megatron) or allocated in backward and freed"
    )
    rollout_batch: int = Field(0, ge=0, description="sequences the rollout engine holds at once; 0 = no engine")
    rollout_ctx: PositiveInt = Field(4096, description="context length of each rollout sequence (KV cache)")
    kv_dtype: Literal["auto", "fp8"] = Field("auto", description="KV cache in the weights' dtype, or fp8")
    engine_max_loras: PositiveInt = Field(LoraConfig.model_fields["max_loras"].default, description="adapter slots")
    engine_max_lora_rank: PositiveInt | None = Field(None, description="vLLM sizes each slot for this; None: rank")
    engine: Literal["auto", "colocated", "separate"] = Field(
        "auto", description="the engine on the learner's GPUs, on GPUs of its own, or whichever needs fewer"
    )
    overhead_gb: float = Field(1.0, ge=0, description="per-GPU CUDA context, cuBLAS and NCCL workspaces")
    headroom: float = Field(0.3, ge=0, le=2, description="the reference adds ~30% for fragmentation and spikes")
    max_gpus: PositiveInt = Field(1024, description="the largest layout the search considers")

    @classmethod
    def build(cls, **fields: object) -> PlanRequest:
        """Validate, raising PlanInputError that names the field (e.g. 'micro_batch: ... (got -1)')."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise from_validation("", exc) from exc

    @classmethod
    def from_run_config(cls, cfg: RunConfig, **overrides: object) -> tuple[str, PlanRequest]:
        """(model, request) for what a RunConfig asks of memory: the project's learner (transformers + PEFT, so
        eager RMSNorm) on whole episodes of up to max_model_len tokens, and an engine holding every rollout of a
        step at once, with the adapter slots its LoRA settings allocate."""
        fields: dict[str, object] = {
            "method": "lora",
            "seq": cfg.model.max_model_len,
            "micro_batch": max(1, cfg.algorithm.micro_batch_tokens // cfg.model.max_model_len),
            "rank": cfg.lora.rank,
            "target_modules": cfg.lora.target_modules,
            "lora_dropout": cfg.lora.dropout,
            "dtype": cfg.engine_dtype,
            "kernels": "eager",
            "rollout_batch": cfg.rollout.tasks_per_step * cfg.rollout.group_size,
            "rollout_ctx": cfg.model.max_model_len,
            "engine_max_loras": cfg.lora.max_loras,
            "engine_max_lora_rank": cfg.lora.max_lora_rank,
            "engine": "colocated" if cfg.resources.num_gpus <= 1 else "auto",
        }
        return cfg.model.name_or_path, cls.build(**{**fields, **overrides})

    def resolved(self) -> PlanRequest:
        """The same request with every method default filled in."""
        qlora = self.method == "qlora"
        return self.model_copy(
            update={
                "optimizer": self.optimizer or ("paged_adamw8bit" if qlora else "adamw"),
                "recompute": self.recompute or ("full" if qlora else "none"),
                "engine_max_lora_rank": self.engine_max_lora_rank or self.rank,
            }
        )

    @property
    def uses_lora(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def act_bytes(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def mask_bytes(self) -> int:
        return self.act_bytes if self.device == "cpu" else 1
