"""How far one optimizer step moved the trainable weights: the L2 norm of the change and its largest entry.

A step that moves nothing (zero advantages, a frozen parameter) or everything (a blown-up gradient) shows here first.
"""

from __future__ import annotations

import math
from typing import Any


class WeightDeltaTracker:
    def __init__(self, model: Any) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.before: list[Any] = []

    def mark(self) -> None:
        """Remember the weights as they are now (before a step)."""
        self.before = [p.detach().clone() for p in self.params]

    def measure(self) -> dict[str, float]:
        """{weight_delta_l2, weight_delta_max} since `mark`."""
        if not self.before:
            raise RuntimeError("WeightDeltaTracker.measure before mark")
        squared, largest = 0.0, 0.0
        for param, old in zip(self.params, self.before, strict=True):
            delta = (param.detach() - old).float()
            squared += float(delta.pow(2).sum())
            largest = max(largest, float(delta.abs().max()))
        return {"weight_delta_l2": math.sqrt(squared), "weight_delta_max": largest}
