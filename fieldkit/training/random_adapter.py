"""A LoRA adapter with seeded random weights on a model, published with its probe.

What tests and benchmarks hot-load where no learner has trained one yet. PEFT initialises lora_B to zero (the
adapter starts as the base model); here lora_B is drawn from N(0, scale^2) so the adapter visibly moves log-probs,
and two seeds give two different adapters.
"""

from __future__ import annotations

from pathlib import Path

from fieldkit.training.records import AdapterRef

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_random_adapter(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str = "policy",
    version: int = 1,
    rank: int = 8,
    seed: int = 1,
    scale: float = 0.05,
    target_modules: list[str] | None = None,
) -> AdapterRef:
    """Write a PEFT adapter to `out_dir` and return its AdapterRef, probe included (computed in float32)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fieldkit.training.probe import build_probe, probe_sequence

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=target_modules or ALL_PROJECTIONS)
    model = get_peft_model(base, lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.eval()
    model.save_pretrained(str(out_dir))
    prompt_ids, continuation_ids = probe_sequence(AutoTokenizer.from_pretrained(model_dir))
    probe = build_probe(model, prompt_ids, continuation_ids)
    return AdapterRef(name=name, version=version, path=str(Path(out_dir).resolve()), rank=rank, probe=probe)
