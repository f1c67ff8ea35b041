"""Dr.GRPO (arXiv 2503.20783): mean-centred outcome reward, no division by the std (which biases towards easy and
hard prompts); its length-unbiased normalisation is the `seq-mean-token-sum-norm` aggregation in the losses."""

from __future__ import annotations

from collections.abc import Sequence

from fieldkit.config import AlgorithmConfig
from fieldkit.gym.records import Episode
from fieldkit.rl.group_stats import rewards_of
from fieldkit.rl.grpo import broadcast, no_signal
from fieldkit.rl.records import GroupAdvantages


def centred_advantages(rewards: Sequence[float], *, eps: float) -> list[float]:
    """A_i = r_i - mean r; exact zeros for an all-equal group (the float mean can miss the value by an ulp)."""
    if no_signal(rewards, eps):
        return [0.0] * len(rewards)
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


def estimate(group: Sequence[Episode], cfg: AlgorithmConfig) -> GroupAdvantages:
    rewards = rewards_of(group)
    advantages = centred_advantages(rewards, eps=cfg.adv_eps)
    return GroupAdvantages(episodes=broadcast(group, advantages), zero_signal=no_signal(rewards, cfg.adv_eps))
