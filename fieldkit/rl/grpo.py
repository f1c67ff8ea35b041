"""GRPO (arXiv 2402.03300): the group z-score of the outcome reward, broadcast to every turn of the rollout."""

from __future__ import annotations

from collections.abc import Sequence

from fieldkit.config import AlgorithmConfig
from fieldkit.gym.records import Episode
from fieldkit.rl.group_stats import rewards_of, zscore
from fieldkit.rl.records import EpisodeAdvantages, GroupAdvantages


def outcome_advantages(rewards: Sequence[float], *, unbiased: bool, eps: float) -> list[float]:
    """A_i = (r_i - mean r) / (std r + eps); all zeros for a group without signal (size 1 or all equal)."""
    return zscore(rewards, unbiased=unbiased, eps=eps) or [0.0] * len(rewards)


def broadcast(group: Sequence[Episode], per_episode: Sequence[float]) -> list[EpisodeAdvantages]:
    """One advantage per episode, given to each of its turns, with clip scale 1."""
    return [
        EpisodeAdvantages(
            episode_id=e.episode_id, turn_advantages=[a] * len(e.turns), turn_clip_scales=[1.0] * len(e.turns)
        )
        for e, a in zip(group, per_episode, strict=True)
    ]


def estimate(group: Sequence[Episode], cfg: AlgorithmConfig) -> GroupAdvantages:
    rewards = rewards_of(group)
    advantages = outcome_advantages(rewards, unbiased=cfg.std == "unbiased", eps=cfg.adv_eps)
    return GroupAdvantages(episodes=broadcast(group, advantages), zero_signal=no_signal(rewards, cfg.adv_eps))


def no_signal(rewards: Sequence[float], eps: float) -> bool:
    """All rewards equal (within eps): the outcome does not rank the rollouts."""
    return max(rewards) - min(rewards) < eps
