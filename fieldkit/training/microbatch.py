"""Micro-batches by a token budget: the batch's sequences grouped so each padded micro-batch fits the budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fieldkit.rl.records import TrainSequence

if TYPE_CHECKING:
    import torch


def plan_micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped so that rows x longest row <= token_budget, longest sequences first (so a micro-batch holds
    similar lengths and pads little). A sequence longer than the budget gets a micro-batch of its own."""
    if token_budget < 1:
        raise ValueError(f"token_budget = {token_budget}: must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    plan: list[list[int]] = []
    for i in order:
        if plan and len(plan[-1]) + 1 <= token_budget // lengths[plan[-1][0]]:
            plan[-1].append(i)  # the first index is the micro-batch's longest: lengths only fall from here
        else:
            plan.append([i])
    return plan


@dataclass
class MicroBatch:
    """Right-padded tensors [rows, longest]; padding has attention 0 and mask 0."""

    input_ids_bt: torch.Tensor
    attention_bt: torch.Tensor
    mask_bt: torch.Tensor
    behaviour_logp_bt: torch.Tensor
    advantages_bt: torch.Tensor
    turn_bt: torch.Tensor
    clip_scale_bt: torch.Tensor
    temperature_bt: torch.Tensor  # the sampling temperature of each token (1 on context and padding)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_bt.sum())


def collate(sequences: Sequence[TrainSequence], device: str) -> MicroBatch:
    import torch

    width = max(len(s.token_ids) for s in sequences)

    def padded(field: str, pad: float, dtype: torch.dtype) -> torch.Tensor:
        rows = [list(getattr(s, field)) + [pad] * (width - len(s.token_ids)) for s in sequences]
        return torch.tensor(rows, dtype=dtype, device=device)

    return MicroBatch(
        input_ids_bt=padded("token_ids", 0, torch.long),
        attention_bt=torch.tensor(
            [[1] * len(s.token_ids) + [0] * (width - len(s.token_ids)) for s in sequences], device=device
        ),
        mask_bt=padded("assistant_mask", 0, torch.long),
        behaviour_logp_bt=padded("behaviour_logprobs", 0.0, torch.float32),
        advantages_bt=padded("advantages", 0.0, torch.float32),
        turn_bt=padded("turn_index", -1, torch.long),
        clip_scale_bt=padded("clip_scale", 1.0, torch.float32),
        temperature_bt=padded("temperature", 1.0, torch.float32),
    )
