"""The advantage estimators, registered by name (`algorithm.advantage` in the run config)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fieldkit.config import AlgorithmConfig
from fieldkit.gym.records import Episode
from fieldkit.rl import a2tgpo, dr_grpo, gigpo_step, grpo
from fieldkit.rl.records import GroupAdvantages

Estimator = Callable[[Sequence[Episode], AlgorithmConfig], GroupAdvantages]

ESTIMATORS: dict[str, Estimator] = {
    "grpo": grpo.estimate,
    "dr_grpo": dr_grpo.estimate,
    "gigpo_step": gigpo_step.estimate,
    "a2tgpo": a2tgpo.estimate,
}


def estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"algorithm.advantage = {name!r}: unknown estimator; known: {', '.join(ESTIMATORS)}") from None


def group_advantages(group: Sequence[Episode], cfg: AlgorithmConfig) -> GroupAdvantages:
    """The configured estimator on one group (the rollouts of one prompt in one step)."""
    if not group:
        raise ValueError("an empty group has no advantages")
    group_ids = {e.group_id for e in group}
    if len(group_ids) != 1:
        raise ValueError(f"a group holds the rollouts of one prompt; got group_ids {sorted(group_ids)}")
    return estimator(cfg.advantage)(group, cfg)
