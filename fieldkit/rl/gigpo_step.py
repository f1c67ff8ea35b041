"""T2PO's advantage (arXiv 2605.02178, GiGPO-style): A = alpha * A_traj + beta * A_step[turn].

A_traj is GRPO's outcome z-score. A_step[t] is the z-score, across the rollouts of the group that reached turn t, of
step success (the command exited 0 and the reply parsed); it is 0 where fewer than 2 rollouts reached turn t or
their successes were all equal. Turns are matched by index: the shell tasks have no shared anchor states to match.
"""

from __future__ import annotations

from collections.abc import Sequence

from fieldkit.config import AlgorithmConfig
from fieldkit.gym.records import Episode, Turn
from fieldkit.rl.group_stats import rewards_of, zscore
from fieldkit.rl.grpo import no_signal, outcome_advantages
from fieldkit.rl.records import EpisodeAdvantages, GroupAdvantages


def step_succeeded(turn: Turn) -> bool:
    """Exit 0 and no parse error. The done signal runs no command and counts as a success: scoring it as a
    failure would teach the agent never to stop, the very habit the reference's SFT model had to unlearn."""
    if turn.action.kind == "parse_error":
        return False
    if turn.action.kind == "done":
        return True
    return turn.exec_result is not None and turn.exec_result.exit_code == 0


def step_advantages(successes: Sequence[Sequence[bool]], *, unbiased: bool, eps: float) -> list[list[float]]:
    """successes[i][t] -> A_step[i][t], normalised over the rollouts that reached turn t."""
    advantages = [[0.0] * len(s) for s in successes]
    for t in range(max((len(s) for s in successes), default=0)):
        reached = [i for i, s in enumerate(successes) if len(s) > t]
        scores = zscore([float(successes[i][t]) for i in reached], unbiased=unbiased, eps=eps)
        for i, score in zip(reached, scores or [], strict=False):
            advantages[i][t] = score
    return advantages


def combine(traj: Sequence[float], step: Sequence[Sequence[float]], *, alpha: float, beta: float) -> list[list[float]]:
    """alpha * A_traj[i] + beta * A_step[i][t]."""
    return [[alpha * a + beta * s for s in steps] for a, steps in zip(traj, step, strict=True)]


def estimate(group: Sequence[Episode], cfg: AlgorithmConfig) -> GroupAdvantages:
    rewards = rewards_of(group)
    unbiased = cfg.std == "unbiased"
    traj = outcome_advantages(rewards, unbiased=unbiased, eps=cfg.adv_eps)
    step = step_advantages([[step_succeeded(t) for t in e.turns] for e in group], unbiased=unbiased, eps=cfg.adv_eps)
    per_turn = combine(traj, step, alpha=cfg.traj_weight, beta=cfg.step_weight)
    episodes = [
        EpisodeAdvantages(episode_id=e.episode_id, turn_advantages=a, turn_clip_scales=[1.0] * len(a))
        for e, a in zip(group, per_turn, strict=True)
    ]
    return GroupAdvantages(episodes=episodes, zero_signal=no_signal(rewards, cfg.adv_eps))
