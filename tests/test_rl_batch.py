"""Episode groups -> TrainBatch: the engine's tokens laid out as the model read them, nothing re-tokenised."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rl_episodes import make_episode, make_turn, one_turn_group

from fieldkit.config import AlgorithmConfig
from fieldkit.rl.batch import build_train_batch
from fieldkit.rl.records import TrainSequence


def two_turn_group() -> list:
    first = make_episode(
        "a",
        1.0,
        [
            make_turn(0, prompt=(10, 11, 12), response=(20, 21), logprobs=(-0.5, -0.25), info_gain=0.4),
            make_turn(1, prompt=(13,), response=(22,), logprobs=(-2.0,), info_gain=0.1),
        ],
    )
    second = make_episode(
        "b", 0.0, [make_turn(0, prompt=(10, 11, 12), response=(30,), logprobs=(-1.0,), info_gain=0.2)]
    )
    return [first, second]


def test_layout_masks_logprobs_turns_and_advantages() -> None:
    batch = build_train_batch([two_turn_group()], AlgorithmConfig())
    a, b = batch.sequences
    assert a.token_ids == [10, 11, 12, 20, 21, 13, 22]
    assert a.assistant_mask == [0, 0, 0, 1, 1, 0, 1]
    assert a.behaviour_logprobs == [0, 0, 0, -0.5, -0.25, 0, -2.0]
    assert a.turn_index == [-1, -1, -1, 0, 0, -1, 1]
    adv = 0.5 / 0.5**0.5  # rewards 1, 0: mean 1/2, unbiased std sqrt(1/2)
    assert a.advantages == pytest.approx([0, 0, 0, adv, adv, 0, adv], abs=1e-5)
    assert b.advantages == pytest.approx([0, 0, 0, -adv], abs=1e-5)
    assert a.clip_scale == [1.0] * 7
    assert (batch.n_tokens, batch.n_assistant_tokens, batch.groups, batch.zero_signal_groups) == (11, 4, 1, 0)


def test_each_sampled_token_carries_its_turns_sampling_temperature() -> None:
    turns = [make_turn(0, temperature=0.4), make_turn(1, prompt=(5,), response=(6,), temperature=0.0)]
    group = [make_episode("a", 1.0, turns), make_episode("b", 0.0, [make_turn(0)])]
    batch = build_train_batch([group], AlgorithmConfig())
    # context tokens score at 1; a greedy turn (T = 0) has its log-probs at T = 1, as vLLM returns them
    assert batch.sequences[0].temperature == [1.0, 1.0, 0.4, 0.4, 1.0, 1.0]


def test_a2tgpo_clip_scale_is_per_turn() -> None:
    batch = build_train_batch([two_turn_group()], AlgorithmConfig(name="a2tgpo"))
    a = batch.sequences[0]
    # turn 0's gains .4 and .2 normalise to +1 / -1 -> c = 1 + 0.3 (2 sigmoid(1) - 1); the last turn has c = 1
    c0 = pytest.approx(1.1386351472, abs=1e-5)  # eps 1e-6 on a std of 0.1
    assert a.clip_scale == [1.0, 1.0, 1.0, c0, c0, 1.0, 1.0]


def test_dapo_drops_zero_signal_groups_and_counts_them() -> None:
    groups = [one_turn_group([1.0, 1.0], "same"), one_turn_group([1.0, 0.0], "mixed")]
    kept = build_train_batch(groups, AlgorithmConfig())
    assert (len(kept.sequences), kept.zero_signal_groups, kept.dropped_groups) == (4, 1, 0)
    dapo = build_train_batch(groups, AlgorithmConfig(name="dapo"))
    assert (len(dapo.sequences), dapo.zero_signal_groups, dapo.dropped_groups) == (2, 1, 1)
    assert {s.group_id for s in dapo.sequences} == {"mixed"}


def test_an_episode_that_sampled_nothing_counts_in_its_group_but_has_no_sequence() -> None:
    group = [make_episode("empty", 0.0, []), *one_turn_group([1.0])]
    batch = build_train_batch([group], AlgorithmConfig())
    assert [s.episode_id for s in batch.sequences] == ["g0-e0"]
    assert batch.sequences[0].advantages[-1] > 0  # ranked against the empty episode's reward 0


def test_a_sequence_whose_fields_disagree_in_length_is_refused() -> None:
    fields = dict(
        episode_id="e",
        group_id="g",
        policy_version=0,
        token_ids=[1, 2, 3],
        assistant_mask=[0, 1, 1],
        behaviour_logprobs=[0.0, -1.0],
        advantages=[0.0, 1.0, 1.0],
        turn_index=[-1, 0, 0],
        clip_scale=[1.0] * 3,
        temperature=[1.0] * 3,
    )
    with pytest.raises(ValidationError, match="behaviour_logprobs has 2 entries, 3 tokens"):
        TrainSequence(**fields)
    with pytest.raises(ValidationError, match="first token"):
        TrainSequence(**{**fields, "behaviour_logprobs": [0.0] * 3, "assistant_mask": [1, 1, 1]})
