"""Group statistics every estimator shares: the rewards of a group and a z-score that knows when there is no signal."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fieldkit.gym.records import Episode


def rewards_of(group: Sequence[Episode]) -> list[float]:
    """The group's rewards; an ungraded episode is an error (it would silently count as 0)."""
    missing = [e.episode_id for e in group if e.reward is None]
    if missing:
        raise ValueError(f"episodes without a reward: {', '.join(missing)}; grade them before computing advantages")
    return [float(e.reward) for e in group]  # type: ignore[arg-type]


def zscore(values: Sequence[float], *, unbiased: bool, eps: float) -> list[float] | None:
    """(v - mean) / (std + eps), or None when there is no signal: fewer than 2 values, or a std below eps.

    `unbiased` divides the variance by n - 1 (torch.std, as TRL and verl do), otherwise by n (numpy's default).
    """
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1 if unbiased else n)
    std = math.sqrt(variance)
    if std < eps:
        return None
    return [(v - mean) / (std + eps) for v in values]
