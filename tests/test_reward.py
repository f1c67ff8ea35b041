"""Rewards against the reference examples: r = n_passed/n_total - 0.2 * min(1, turns/max_turns), and binary."""

from __future__ import annotations

import pytest

from fieldkit.gym.records import Action, AssertionResult, Episode, GradeResult, Turn
from fieldkit.reward import binary_reward, episode_reward, reward_from_grade, shaped_reward


def grade_of(n_passed: int, n_total: int) -> GradeResult:
    assertions = [AssertionResult(kind="file_exists", path=f"f{i}", passed=i < n_passed) for i in range(n_total)]
    return GradeResult(
        passed=n_passed == n_total, n_passed=n_passed, n_total=n_total, assertions=assertions, score=n_passed / n_total
    )


def episode_of(n_turns: int, grade: GradeResult | None, stop_reason: str = "task_complete", failure=None) -> Episode:
    turns = [
        Turn(
            index=i,
            prompt_token_ids=[1],
            response_token_ids=[2],
            response_logprobs=[-0.5],
            response_text="ls",
            action=Action(kind="command", command="ls"),
        )
        for i in range(n_turns)
    ]
    return Episode(
        episode_id="e",
        task_id="t",
        group_id="g",
        policy_version=0,
        turns=turns,
        stop_reason=stop_reason,
        grade=grade,
        failure=failure,
    )


@pytest.mark.parametrize(
    ("n_passed", "n_total", "turns", "expected"),
    [
        (5, 5, 4, 0.9333333),  # a pass in 4 of 12 turns
        (5, 5, 12, 0.8),  # a pass in 12 turns
        (3, 5, 12, 0.4),  # 3 of 5 assertions in 12 turns
        (3, 5, 20, 0.4),  # the turn penalty is capped at 0.2
        (0, 4, 1, -0.2 / 12),
    ],
)
def test_shaped_reward_matches_the_reference_examples(n_passed, n_total, turns, expected) -> None:
    assert shaped_reward(n_passed / n_total, turns, 12) == pytest.approx(expected, abs=1e-6)
    episode = episode_of(turns, grade_of(n_passed, n_total))
    assert episode_reward(episode, "shaped", 12).value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("stop_reason", ["parse_error", "agent_error"])
def test_only_the_agents_own_stop_saves_turns(stop_reason) -> None:
    """Ending early on parse errors must not pay better than running on: that taught the tiny model to babble."""
    aborted = episode_reward(episode_of(3, grade_of(1, 4), stop_reason), "shaped", 12)
    stopped = episode_reward(episode_of(3, grade_of(1, 4), "task_complete"), "shaped", 12)
    ran_out = episode_reward(episode_of(12, grade_of(1, 4), "max_turns"), "shaped", 12)
    assert aborted.value == pytest.approx(ran_out.value) == pytest.approx(0.25 - 0.2)
    assert stopped.value == pytest.approx(0.25 - 0.05)
    assert aborted.n_turns == 12 and aborted.detail == "1/4 assertions in 12 turns"


def test_binary_reward_and_status_labels() -> None:
    assert binary_reward(True) == 1.0 and binary_reward(False) == 0.0
    kept = reward_from_grade(grade_of(5, 5), 7, "binary", 12)
    assert (kept.value, kept.status, kept.passed) == (1.0, "keep", True)
    missed = reward_from_grade(grade_of(4, 5), 3, "binary", 12)
    assert (missed.value, missed.status, missed.detail) == (0.0, "discard", "4/5 assertions in 3 turns")
    assert missed.trainable


def test_a_failed_or_ungraded_episode_is_a_crash_the_learner_must_skip() -> None:
    failed = episode_reward(episode_of(2, None, "failed", failure="sandbox died"), "shaped", 12)
    assert (failed.status, failed.value, failed.detail, failed.trainable) == ("crash", 0.0, "sandbox died", False)
    ungraded = episode_reward(episode_of(2, None, "max_turns"), "binary", 12)
    assert ungraded.status == "crash" and ungraded.detail == "not graded"


def test_rubric_score_feeds_the_shaped_reward() -> None:
    mixed = grade_of(1, 2).model_copy(update={"score": 0.7 * 0.5 + 0.3 * 1.0, "rubric_score": 1.0})
    assert reward_from_grade(mixed, 6, "shaped", 12).value == pytest.approx(0.65 - 0.1)


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ValueError, match="max_turns must be >= 1, got 0"):
        shaped_reward(1.0, 3, 0)
    with pytest.raises(ValueError, match="score must be within"):
        shaped_reward(1.5, 3, 12)


def test_reward_statuses_are_words_of_the_lineage_vocabulary() -> None:
    from typing import get_args

    from fieldkit.lineage.records import STATUSES
    from fieldkit.reward import RewardStatus

    assert set(get_args(RewardStatus)) <= set(STATUSES)
