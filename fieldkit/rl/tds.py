"""T2PO's turn-level dynamical sampling (arXiv 2605.02178), executed by the rollout worker.

H_t is the mean per-token entropy of turn t, each token's entropy computed from its top-k log-probs renormalised
to sum to 1. A turn whose entropy moved by less than eta from the previous turn's (but did move) is regenerated,
at most `algorithm.tds_max_regenerations` times; the first turn is never regenerated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def token_entropy(top_logprobs: Sequence[float]) -> float:
    """Entropy of the distribution the top-k log-probs describe, renormalised over those k."""
    if not top_logprobs:
        raise ValueError("a token needs at least one top log-prob")
    peak = max(top_logprobs)
    weights = [math.exp(lp - peak) for lp in top_logprobs]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0)


def turn_entropy(top_logprobs_per_token: Sequence[Sequence[float]]) -> float:
    """H_t: the mean token entropy of the turn (0 for a turn that sampled nothing)."""
    if not top_logprobs_per_token:
        return 0.0
    return sum(token_entropy(t) for t in top_logprobs_per_token) / len(top_logprobs_per_token)


def should_regenerate(
    entropy: float, previous_entropy: float | None, *, eta: float, tries_so_far: int, max_tries: int
) -> bool:
    """0 < |H_t - H_{t-1}| < eta and retries left."""
    if previous_entropy is None or tries_so_far >= max_tries:
        return False
    return 0 < abs(entropy - previous_entropy) < eta
