"""A2TGPO (arXiv 2605.06200): per-turn information gain folded into GRPO, and a per-turn adaptive clip.

Turns are 0-based here; L = the last turn's index (the paper's T_i). For rollout i:
- îg[i][t]: the raw gain of turn t normalised over G_{q,t} = the rollouts of the group that reached turn t and have
  a gain (population std, eps); 0 where |G| < 2.
- A[i][t] = alpha * D[i][t] / sqrt(L - t) + R̂[i] for t < L, with D[i][t] = sum_{k=t}^{L-1} gamma^(k-t) îg[i][k];
  A[i][L] = R̂[i] (R̂ = GRPO's outcome z-score). The last turn's own gain is never accumulated: the outcome covers it.
- c[i][t] = 1 + beta * (2 sigmoid(îg[i][t]) - 1) in (1 - beta, 1 + beta); c[i][L] = 1.
The raw gains arrive on `Turn.info_gain`, written by the rollout side with `information_gain` below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

from fieldkit.config import AlgorithmConfig
from fieldkit.gym.records import Episode
from fieldkit.rl.group_stats import rewards_of, zscore
from fieldkit.rl.grpo import no_signal, outcome_advantages
from fieldkit.rl.records import EpisodeAdvantages, GroupAdvantages


def information_gain(mean_logprobs: Sequence[float], form: Literal["logprob", "prob"]) -> list[float]:
    """Per-turn gains from scores measured before the first turn (index 0) and after each turn.

    "logprob": ig_t = s_t - s_{t-1}, with s the teacher-forced mean log-prob of the gold continuation (released
    code); also the plain difference the `progress` source takes of assertion pass fractions.
    "prob": ig_t = exp(s_t) - exp(s_{t-1}), the paper's probability difference.
    """
    values = list(mean_logprobs) if form == "logprob" else [math.exp(m) for m in mean_logprobs]
    return [after - before for before, after in pairwise(values)]


def turn_group_normalise(gains: Sequence[Sequence[float | None]], *, eps: float) -> list[list[float]]:
    """gains[i][t] (None = not measured) -> îg[i][t], z-scored per turn index over the rollouts that have one."""
    normalised = [[0.0] * len(g) for g in gains]
    for t in range(max((len(g) for g in gains), default=0)):
        members = [i for i, g in enumerate(gains) if len(g) > t and g[t] is not None]
        scores = zscore([gains[i][t] for i in members], unbiased=False, eps=eps)  # type: ignore[misc]
        for i, score in zip(members, scores or [], strict=False):
            normalised[i][t] = score
    return normalised


def accumulate(ig_hat: Sequence[float], outcome: float, *, alpha: float, gamma: float) -> list[float]:
    """A[t] = alpha * sum_{k=t}^{L-1} gamma^(k-t) îg[k] / sqrt(L - t) + outcome; A[L] = outcome."""
    last = len(ig_hat) - 1
    advantages = []
    for t in range(last):
        discounted = sum(gamma ** (k - t) * ig_hat[k] for k in range(t, last))
        advantages.append(alpha * discounted / math.sqrt(last - t) + outcome)
    return [*advantages, outcome] if ig_hat else []


def clip_scales(ig_hat: Sequence[float], *, beta: float) -> list[float]:
    """c[t] = 1 + beta * (2 sigmoid(îg[t]) - 1) = 1 + beta * tanh(îg[t] / 2); the last turn's c is 1."""
    return [1.0 + beta * math.tanh(x / 2) for x in ig_hat[:-1]] + ([1.0] if ig_hat else [])


def estimate(group: Sequence[Episode], cfg: AlgorithmConfig) -> GroupAdvantages:
    rewards = rewards_of(group)
    outcome = outcome_advantages(rewards, unbiased=cfg.std == "unbiased", eps=cfg.adv_eps)
    ig_hat = turn_group_normalise([[t.info_gain for t in e.turns] for e in group], eps=cfg.adv_eps)
    episodes = [
        EpisodeAdvantages(
            episode_id=e.episode_id,
            turn_advantages=accumulate(ig, r_hat, alpha=cfg.ig_alpha, gamma=cfg.ig_gamma),
            turn_clip_scales=clip_scales(ig, beta=cfg.clip_scale_beta),
        )
        for e, ig, r_hat in zip(group, ig_hat, outcome, strict=True)
    ]
    return GroupAdvantages(episodes=episodes, zero_signal=no_signal(rewards, cfg.adv_eps))
