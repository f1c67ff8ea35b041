"""The KL reference as a CPU-resident copy of LoRA weights, swapped into the live model for a no-grad pass.

The reference is the adapter the run started from (the SFT warm start, or the zero-effect fresh adapter = the base
model). Keeping a second full model would double the base's memory; the adapter is ~1% of it, so we keep only the
adapter's tensors and borrow the live model's base for the reference forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class LoraReference:
    def __init__(self, model: Any) -> None:
        self.weights = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        if not self.weights:
            raise ValueError("the model has no trainable (LoRA) parameters to snapshot")

    @contextmanager
    def swapped_in(self, model: Any) -> Iterator[None]:
        """Inside: the model computes with the reference adapter, in eval mode (no dropout), without grad."""
        import torch

        params = dict(model.named_parameters())
        live = {}
        was_training = model.training
        try:
            for name, weight in self.weights.items():
                param = params[name]
                live[name] = param.data
                param.data = weight.to(device=param.device, dtype=param.dtype)
            model.eval()
            with torch.no_grad():
                yield
        finally:
            for name, data in live.items():
                params[name].data = data
            model.train(was_training)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({n: w.contiguous() for n, w in self.weights.items()}, str(path))

    def load(self, path: Path) -> None:
        from safetensors.torch import load_file

        loaded = load_file(str(path))
        if set(loaded) != set(self.weights):
            raise ValueError(f"{path}: reference tensors do not match this model's adapter")
        self.weights = loaded
