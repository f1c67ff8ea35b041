"""Outcome -> reward. Binary (1 if every assertion passed) or shaped, the single-Spark GRPO reward:

    r = s_task - 0.2 * min(1, n_turns / max_turns)

where s_task is the grade's score: n_passed/n_total, or 0.7*code + 0.3*rubric when a judge scored rubric items.
The turn penalty is what taught the reference policy to stop: a pass in 4 of 12 turns earns 0.933, in 12 turns 0.8.
Only the agent's own stop (TASK_COMPLETE) saves turns: an episode cut short by three parse errors in a row or a full
context pays for all max_turns, as if it had run on. Charging its real turns paid a policy to babble its way out:
on the tiny model, GRPO drove 15 of 16 episodes to end on parse errors by step 7, and task_complete stayed at 0%.

Every Reward carries a status from the lineage vocabulary: `keep` (graded and passed), `discard` (graded, not
passed), `crash` (an engine or sandbox fault ended the episode, or it was never graded: the value means nothing and
the learner must leave the episode out).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldkit.gym.records import Episode, GradeResult, Record

RewardKind = Literal["binary", "shaped"]
RewardStatus = Literal["keep", "discard", "crash"]
TURN_PENALTY = 0.2


class Reward(Record):
    value: float
    kind: RewardKind
    status: RewardStatus
    passed: bool = False
    score: float = Field(0.0, description="the grade's s_task the reward was computed from")
    n_turns: int = Field(0, ge=0, description="turns the penalty charged: max_turns unless the agent stopped")
    detail: str = ""

    @property
    def trainable(self) -> bool:
        return self.status != "crash"


def binary_reward(passed: bool) -> float:
    return 1.0 if passed else 0.0


def shaped_reward(score: float, n_turns: int, max_turns: int) -> float:
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be within [0, 1], got {score}")
    return score - TURN_PENALTY * min(1.0, n_turns / max_turns)


def reward_from_grade(grade: GradeResult, n_turns: int, kind: RewardKind, max_turns: int) -> Reward:
    value = binary_reward(grade.passed) if kind == "binary" else shaped_reward(grade.score, n_turns, max_turns)
    return Reward(
        value=value,
        kind=kind,
        status="keep" if grade.passed else "discard",
        passed=grade.passed,
        score=grade.score,
        n_turns=n_turns,
        detail=f"{grade.n_passed}/{grade.n_total} assertions in {n_turns} turns",
    )


def episode_reward(episode: Episode, kind: RewardKind, max_turns: int) -> Reward:
    """The reward of a finished episode; a failed or ungraded episode is a `crash` with value 0."""
    n_turns = len(episode.turns) if episode.stop_reason == "task_complete" else max(len(episode.turns), max_turns)
    if episode.stop_reason == "failed" or episode.grade is None:
        why = episode.failure or ("not graded" if episode.grade is None else "episode failed")
        return Reward(value=0.0, kind=kind, status="crash", n_turns=n_turns, detail=why)
    return reward_from_grade(episode.grade, n_turns, kind, max_turns)
