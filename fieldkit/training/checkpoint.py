"""Learner state for resume: the adapter, the optimizer's moments, the KL reference, every RNG and the step.

A checkpoint is a directory the learner owns whole (the driver passes e.g. runs/<run>/checkpoints/<step>/learner):
it is filled beside its final name and moved into place, with `state.json` written last inside it, so a
directory without `state.json` is never a checkpoint. Nothing is pickled: tensors go through safetensors or
torch's weights-only format, RNG states through JSON.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fieldkit.training.lora_model import adapter_rank, write_adapter_files, write_directory

if TYPE_CHECKING:
    from fieldkit.training.trainer import LoraPolicyTrainer

STATE_FILE = "state.json"
FORMAT = 2  # 2: `step` (the driver step the state holds) replaced `steps_done` (updates taken)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = cast(tuple[str, Any, int, int, float], np.random.get_state(legacy=True))
    return {
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
    }


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_state(trainer: LoraPolicyTrainer, directory: Path) -> None:
    import torch

    def fill(staging: Path) -> None:
        write_adapter_files(trainer.model, staging / "adapter")
        torch.save(trainer.optimizer.state_dict(), staging / "optimizer.pt")
        if trainer.reference is not None:
            trainer.reference.save(staging / "reference.safetensors")
        (staging / "rng.json").write_text(json.dumps(rng_state()))
        state = {"format": FORMAT, "step": trainer.at_step, "rank": adapter_rank(trainer.model)}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    write_directory(directory, fill)


def load_state(trainer: LoraPolicyTrainer, directory: Path) -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state_path = directory / STATE_FILE
    if not state_path.exists():
        raise FileNotFoundError(f"{directory}: no {STATE_FILE}; not a complete learner checkpoint")
    state = json.loads(state_path.read_text())
    if state.get("format") != FORMAT or state.get("rank") != adapter_rank(trainer.model):
        raise ValueError(
            f"{state_path}: format {state.get('format')} rank {state.get('rank')} does not match this learner "
            f"(format {FORMAT}, rank {adapter_rank(trainer.model)})"
        )
    result = set_peft_model_state_dict(
        trainer.model, load_file(str(directory / "adapter" / "adapter_model.safetensors"))
    )
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{directory}/adapter: tensors this model has no place for: {unexpected[:3]}")
    optimizer_path = directory / "optimizer.pt"
    try:
        optimizer_state = torch.load(optimizer_path, weights_only=True)
    except Exception as exc:  # truncated or garbled: say which file, whatever torch's own words are
        raise ValueError(f"{optimizer_path}: unreadable ({type(exc).__name__}: {exc})") from None
    trainer.optimizer.load_state_dict(optimizer_state)
    reference_path = directory / "reference.safetensors"
    if trainer.reference is not None:
        if not reference_path.exists():
            raise FileNotFoundError(f"{reference_path}: missing; the run has a KL term and needs its reference")
        trainer.reference.load(reference_path)
    restore_rng(json.loads((directory / "rng.json").read_text()))
    trainer.at_step = int(state["step"])
