"""Advantage estimators against numbers computed by hand, and the properties each must keep."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rl_episodes import make_episode, make_turn, one_turn_group

from fieldkit.config import AlgorithmConfig
from fieldkit.rl import a2tgpo
from fieldkit.rl.advantages import ESTIMATORS, estimator, group_advantages

EXACT = 1e-12  # adv_eps small enough that the hand-computed numbers hold to 1e-9
S3 = math.sqrt(3)


def assert_nested(got: list[list[float]], expected: list[list[float]]) -> None:
    """Per-episode lists: the same lengths, and values within 1e-9."""
    assert [len(g) for g in got] == [len(e) for e in expected]
    assert [v for g in got for v in g] == pytest.approx([v for e in expected for v in e], abs=1e-9)


def advantages(name: str, group, **knobs) -> list[list[float]]:
    cfg = AlgorithmConfig(name=name, adv_eps=EXACT, **knobs)
    return [e.turn_advantages for e in group_advantages(group, cfg).episodes]


def test_presets_select_the_estimator_and_explicit_keys_win() -> None:
    assert AlgorithmConfig(name="t2po").advantage == "gigpo_step"
    assert AlgorithmConfig(name="t2po").std == "population"  # as the single-Spark T2PO numbers (REFERENCE §3)
    assert AlgorithmConfig(name="a2tgpo").loss == "turn_clip"
    assert AlgorithmConfig(name="dapo").clip_eps_high == 0.28
    assert AlgorithmConfig(name="dapo", clip_eps_high=0.3).clip_eps_high == 0.3
    assert set(ESTIMATORS) == {"grpo", "dr_grpo", "gigpo_step", "a2tgpo"}
    with pytest.raises(ValueError, match=r"'ppo'.*grpo"):
        estimator("ppo")


def test_grpo_unbiased_and_population_std() -> None:
    group = one_turn_group([1.0, 0.0, 0.0, 0.0])
    # mean 1/4; unbiased var = (9/16 + 3/16) / 3 = 1/4 -> std 1/2; population var = 3/16 -> std sqrt(3)/4
    assert_nested(advantages("grpo", group), [[1.5], [-0.5], [-0.5], [-0.5]])
    assert_nested(advantages("grpo", group, std="population"), [[S3], [-1 / S3], [-1 / S3], [-1 / S3]])


def test_grpo_eps_is_added_to_the_std() -> None:
    cfg = AlgorithmConfig(adv_eps=0.5)
    (first, *_) = group_advantages(one_turn_group([1.0, 0.0, 0.0, 0.0]), cfg).episodes
    assert first.turn_advantages == pytest.approx([0.75 / (0.5 + 0.5)])


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "gigpo_step", "a2tgpo"])
def test_group_of_one_and_all_equal_groups_give_zero_and_are_counted(name: str) -> None:
    cfg = AlgorithmConfig(advantage=name)
    single = group_advantages(one_turn_group([0.7]), cfg)
    assert single.zero_signal and single.episodes[0].turn_advantages == [0.0]
    equal = group_advantages(one_turn_group([0.1, 0.1, 0.1]), cfg)
    assert equal.zero_signal and all(e.turn_advantages == [0.0] for e in equal.episodes)
    assert not group_advantages(one_turn_group([0.1, 0.2]), cfg).zero_signal


def test_grpo_broadcasts_to_every_turn_of_rollouts_of_different_lengths() -> None:
    group = [
        make_episode("a", 1.0, [make_turn(0), make_turn(1), make_turn(2)]),
        make_episode("b", 0.0, [make_turn(0)]),
    ]
    # mean 1/2, unbiased std sqrt(1/2)
    a = 0.5 / math.sqrt(0.5)
    assert_nested(advantages("grpo", group), [[a, a, a], [-a]])


def test_dr_grpo_is_mean_centred_only() -> None:
    assert_nested(advantages("dr_grpo", one_turn_group([1.0, 0.0, 0.5])), [[0.5], [-0.5], [0.0]])


def t2po_group() -> list:
    return [
        # step successes [1, 0, 1]: exit 0, exit 1, done (done runs nothing and counts as a success)
        make_episode("a", 1.0, [make_turn(0), make_turn(1, exit_code=1), make_turn(2, kind="done", exit_code=None)]),
        # [1, 0]: exit 0, then a reply that did not parse
        make_episode("b", 0.0, [make_turn(0), make_turn(1, kind="parse_error", exit_code=None)]),
        make_episode("c", 0.0, [make_turn(0, exit_code=1)]),  # [0]
    ]


def test_t2po_step_advantage_across_rollouts_that_reached_each_turn() -> None:
    # A_traj (rewards 1,0,0; unbiased std 1/sqrt3): [2/sqrt3, -1/sqrt3, -1/sqrt3]
    # turn 0, successes 1,1,0 -> [1/sqrt3, 1/sqrt3, -2/sqrt3]; turn 1, successes 0,0 -> equal -> 0;
    # turn 2 reached by one rollout -> skipped (0)
    expected = [[3 / S3, 2 / S3, 2 / S3], [0.0, -1 / S3], [-3 / S3]]
    assert_nested(advantages("t2po", t2po_group(), std="unbiased"), expected)
    # the preset's population std (the single-Spark T2PO run): sqrt(2/9) for both terms' groups of 3 -> x sqrt(3/2)
    assert_nested(advantages("t2po", t2po_group()), [[v * math.sqrt(1.5) for v in row] for row in expected])


def test_t2po_weights() -> None:
    expected = [[2 / S3 * 0.5 + 2 / S3, 1 / S3, 1 / S3], [-0.5 / S3 + 2 / S3, -0.5 / S3], [-0.5 / S3 - 4 / S3]]
    assert_nested(advantages("t2po", t2po_group(), traj_weight=0.5, step_weight=2.0, std="unbiased"), expected)


def a2tgpo_group() -> list:
    gains = {"a": [0.1, 0.3, 0.2], "b": [0.3, 0.1], "c": [0.2]}
    rewards = {"a": 1.0, "b": 0.0, "c": 1.0}
    return [make_episode(n, rewards[n], [make_turn(t, info_gain=g) for t, g in enumerate(gains[n])]) for n in gains]


def test_a2tgpo_by_hand() -> None:
    # turn 0 gains .1 .3 .2: mean .2, population std sqrt(.02/3) -> îg = -sqrt(1.5), +sqrt(1.5), 0
    # turn 1 gains .3 .1 -> îg = 1, -1; turn 2 has one member -> 0
    # R̂ (rewards 1,0,1, unbiased): 1/sqrt3, -2/sqrt3, 1/sqrt3; alpha 0.3 (released code), gamma 1
    # a: t0 0.3 * (-sqrt1.5 + 1) / sqrt2 + 1/sqrt3; t1 0.3 * 1 / 1 + 1/sqrt3; t2 (last) 1/sqrt3
    # b: t0 0.3 * sqrt1.5 / 1 - 2/sqrt3; t1 (last) -2/sqrt3.   c: its only turn is the last: 1/sqrt3
    expected = [[0.5296746824, 0.8773502692, 1 / S3], [-0.7872770770, -2 / S3], [1 / S3]]
    assert_nested(advantages("a2tgpo", a2tgpo_group()), expected)
    # the paper's alpha = 1 moves only the gain part
    assert advantages("a2tgpo", a2tgpo_group(), ig_alpha=1.0)[1] == pytest.approx(
        [math.sqrt(1.5) - 2 / S3, -2 / S3], abs=1e-9
    )


def test_a2tgpo_clip_scales_by_hand() -> None:
    cfg = AlgorithmConfig(name="a2tgpo", adv_eps=EXACT)
    scales = [e.turn_clip_scales for e in group_advantages(a2tgpo_group(), cfg).episodes]
    # c = 1 + 0.3 (2 sigmoid(îg) - 1); sigmoid(-sqrt1.5) = 0.22710, sigmoid(1) = 0.73106; last turn 1
    assert_nested(scales, [[0.8362615117, 1.1386351472, 1.0], [1.1637384883, 1.0], [1.0]])


def test_a2tgpo_unmeasured_gains_leave_the_turn_group() -> None:
    group = [
        make_episode("a", 1.0, [make_turn(0, info_gain=0.5), make_turn(1, info_gain=None)]),
        make_episode("b", 0.0, [make_turn(0, info_gain=None), make_turn(1, info_gain=0.2)]),
    ]
    # every turn group has < 2 measured gains -> îg = 0 -> A = R̂ on every turn (unbiased: ±1/sqrt2)
    r = 1 / math.sqrt(2)
    assert_nested(advantages("a2tgpo", group), [[r, r], [-r, -r]])


def test_a2tgpo_discount_and_accumulation() -> None:
    # L = 3: A0 = alpha (g0 + gamma g1 + gamma^2 g2) / sqrt3 + R, A1 = alpha (g1 + gamma g2) / sqrt2 + R
    got = a2tgpo.accumulate([1.0, 2.0, 4.0, 100.0], 0.5, alpha=1.0, gamma=0.5)
    assert got == pytest.approx([(1 + 1 + 1) / S3 + 0.5, (2 + 2) / math.sqrt(2) + 0.5, 4 + 0.5, 0.5])
    assert a2tgpo.accumulate([], 0.5, alpha=1.0, gamma=1.0) == []


def test_information_gain_forms() -> None:
    scores = [-2.0, -1.5, -1.6]
    assert a2tgpo.information_gain(scores, "logprob") == pytest.approx([0.5, -0.1])
    assert a2tgpo.information_gain(scores, "prob") == pytest.approx([0.0877948769, -0.0212336422])


def test_ungraded_episode_and_mixed_groups_are_refused() -> None:
    cfg = AlgorithmConfig()
    ungraded = make_episode("x", 0.0, [make_turn(0)]).model_copy(update={"reward": None})
    with pytest.raises(ValueError, match="x"):
        group_advantages([ungraded], cfg)
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(one_turn_group([1.0], "g1") + one_turn_group([0.0], "g2"), cfg)


rewards_st = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=12)


@given(rewards=rewards_st, population=st.booleans())
def test_grpo_advantages_sum_to_zero_per_group(rewards: list[float], population: bool) -> None:
    cfg = AlgorithmConfig(std="population" if population else "unbiased")
    result = group_advantages(one_turn_group(rewards), cfg)
    assert sum(e.turn_advantages[0] for e in result.episodes) == pytest.approx(0.0, abs=1e-6)


gains_st = st.lists(
    st.lists(st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=6), min_size=1, max_size=8
)


@given(gains=gains_st)
def test_turn_group_normalised_gain_has_zero_mean_per_turn_group(gains: list[list[float | None]]) -> None:
    normalised = a2tgpo.turn_group_normalise(gains, eps=1e-6)
    for t in range(max(len(g) for g in gains)):
        members = [normalised[i][t] for i, g in enumerate(gains) if len(g) > t and g[t] is not None]
        assert sum(members) == pytest.approx(0.0, abs=1e-6)


@given(gains=gains_st)
def test_clip_scale_stays_within_0_7_and_1_3(gains: list[list[float | None]]) -> None:
    for ig in a2tgpo.turn_group_normalise(gains, eps=1e-6):
        scales = a2tgpo.clip_scales(ig, beta=0.3)
        assert all(0.7 < c < 1.3 for c in scales) and scales[-1] == 1.0
