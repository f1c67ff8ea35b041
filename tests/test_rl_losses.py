"""Losses against hand-computed values, micro-batch additivity, and the sign of a gradient step."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from fieldkit.rl.losses import (  # noqa: E402
    Denominators,
    aggregate,
    kl_k3,
    mismatch_weight,
    policy_loss,
    ratio_segments,
    segment_mean,
)

KINDS = ["reinforce", "ppo_clip", "gspo", "turn_clip"]


def loss_of(
    kind: str, logp, old, adv, *, mask=None, turn=None, scale=None, weight=None, eps_low=0.2, eps_high=0.2, dual=None
):
    logp_bt = torch.tensor(logp, dtype=torch.float64)
    mask_bt = torch.tensor(mask) if mask is not None else torch.ones_like(logp_bt, dtype=torch.long)
    return policy_loss(
        kind,  # type: ignore[arg-type]
        logp_bt=logp_bt,
        old_logp_bt=torch.tensor(old, dtype=torch.float64),
        advantages_bt=torch.tensor(adv, dtype=torch.float64),
        weight_bt=torch.tensor(weight, dtype=torch.float64) if weight is not None else torch.ones_like(logp_bt),
        mask_bt=mask_bt,
        turn_bt=torch.tensor(turn) if turn is not None else torch.zeros_like(mask_bt),
        clip_scale_bt=torch.tensor(scale, dtype=torch.float64) if scale is not None else torch.ones_like(logp_bt),
        eps_low=eps_low,
        eps_high=eps_high,
        dual_clip_c=dual,
    )


def test_k3_kl_by_hand() -> None:
    kl = kl_k3(torch.tensor([-1.0, -1.0]), torch.tensor([-2.0, -1.0]))
    assert kl.tolist() == pytest.approx([math.exp(-1) + 1 - 1, 0.0])


def test_ppo_clip_by_hand() -> None:
    up, down = math.log(1.5), math.log(0.5)
    loss, clipped = loss_of("ppo_clip", [[up, up, down, down]], [[0.0] * 4], [[1.0, -1.0, 1.0, -1.0]])
    # rho 1.5 A+ -> clipped to 1.2; rho 1.5 A- -> unclipped -1.5 is the min; rho .5 A+ -> unclipped .5;
    # rho .5 A- -> clipped to .8
    assert loss[0].tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8])
    assert clipped[0].tolist() == [True, False, False, True]


def test_clip_higher_widens_only_the_upper_bound() -> None:
    ratios = [math.log(1.25), math.log(0.7)]
    loss, clipped = loss_of("ppo_clip", [ratios], [[0.0, 0.0]], [[1.0, -1.0]], eps_low=0.2, eps_high=0.28)
    assert loss[0].tolist() == pytest.approx([-1.25, 0.8])  # 1.25 < 1.28 stays; 0.7 A- is clipped to 1 - 0.2
    assert clipped[0].tolist() == [False, True]


def test_dual_clip_bounds_a_negative_advantage_far_above_the_ratio_clip() -> None:
    ratios = [math.log(5.0), math.log(2.0), math.log(5.0), math.log(0.5)]
    loss, clipped = loss_of("ppo_clip", [ratios], [[0.0] * 4], [[-1.0, -1.0, 1.0, -1.0]], dual=3.0)
    # rho 5 A- -> min(-5, -1.2) = -5 is below the floor 3 * -1: bounded at -3, loss 3; rho 2 A- -> -2 above the floor;
    # A+ is never dual-clipped (rho 5 -> the PPO clip 1.2); rho .5 A- -> PPO's clip .8 as before
    assert loss[0].tolist() == pytest.approx([3.0, 2.0, -1.2, 0.8])
    assert clipped[0].tolist() == [True, False, True, True]
    undual, _ = loss_of("ppo_clip", [ratios], [[0.0] * 4], [[-1.0, -1.0, 1.0, -1.0]], dual=None)
    assert undual[0].tolist() == pytest.approx([5.0, 2.0, -1.2, 0.8])


def test_dual_clip_stops_the_gradient_of_the_bounded_token() -> None:
    logp = torch.tensor([[math.log(5.0), math.log(2.0)]], dtype=torch.float64, requires_grad=True)
    loss_bt, _ = policy_loss(
        "ppo_clip",
        logp_bt=logp,
        old_logp_bt=torch.zeros(1, 2, dtype=torch.float64),
        advantages_bt=torch.full((1, 2), -1.0, dtype=torch.float64),
        weight_bt=torch.ones(1, 2, dtype=torch.float64),
        mask_bt=torch.ones(1, 2, dtype=torch.long),
        turn_bt=torch.zeros(1, 2, dtype=torch.long),
        clip_scale_bt=torch.ones(1, 2, dtype=torch.float64),
        eps_low=0.2,
        eps_high=0.2,
        dual_clip_c=3.0,
    )
    loss_bt.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, 2.0])  # d(-rho A)/d logp = -A rho = 2 on the unbounded one


def test_a_weight_scales_each_tokens_loss() -> None:
    loss, _ = loss_of("ppo_clip", [[0.0, 0.0]], [[0.0, 0.0]], [[1.0, -1.0]], weight=[[0.5, 2.0]])
    assert loss[0].tolist() == pytest.approx([-0.5, 2.0])
    reinforce, _ = loss_of("reinforce", [[-2.0, -1.0]], [[0.0, 0.0]], [[1.0, -1.0]], weight=[[0.5, 2.0]])
    assert reinforce[0].tolist() == pytest.approx([1.0, -2.0])  # -w A log pi


def weight_of(correction: str, learner, engine, *, mask=None, segments=None, cap=2.0):
    learner_bt = torch.tensor(learner, dtype=torch.float64)
    return mismatch_weight(
        correction,  # type: ignore[arg-type]
        learner_logp_bt=learner_bt,
        engine_logp_bt=torch.tensor(engine, dtype=torch.float64),
        mask_bt=torch.tensor(mask) if mask is not None else torch.ones_like(learner_bt, dtype=torch.long),
        segments_bt=torch.tensor(segments) if segments is not None else None,
        cap=cap,
    )


# per token pi_learner / pi_engine: 3 (above the cap 2), 1.5, 0.25 (below 1/2), 1; the last token is context
W_LEARNER = [[math.log(0.6), math.log(0.3), math.log(0.05), math.log(0.4), 0.0]]
W_ENGINE = [[math.log(0.2), math.log(0.2), math.log(0.2), math.log(0.4), 0.0]]
W_MASK = [[1, 1, 1, 1, 0]]


def test_tis_truncates_the_mismatch_weight_at_the_cap() -> None:
    weight, corrected = weight_of("tis", W_LEARNER, W_ENGINE, mask=W_MASK)
    assert weight[0, :4].tolist() == pytest.approx([2.0, 1.5, 0.25, 1.0])  # only the upper side is truncated
    assert corrected[0].tolist() == [True, False, False, False, False]


def test_mis_masks_a_weight_outside_the_band() -> None:
    weight, corrected = weight_of("mis", W_LEARNER, W_ENGINE, mask=W_MASK)
    assert weight[0, :4].tolist() == pytest.approx([0.0, 1.5, 0.0, 1.0])  # outside [1/2, 2]: no gradient at all
    assert corrected[0].tolist() == [True, False, True, False, False]


def test_no_correction_weighs_every_token_one() -> None:
    weight, corrected = weight_of("none", W_LEARNER, W_ENGINE, mask=W_MASK)
    assert weight.tolist() == [[1.0] * 5] and not corrected.any()


def test_a_sequence_or_turn_ratio_is_corrected_by_the_segments_geometric_mean() -> None:
    # turn 0: weights 3 and 1.5 -> sqrt(4.5) = 2.12 > 2, masked; turn 1: 0.25 and 1 -> 0.5 = 1/2, kept whole
    weight, corrected = weight_of("mis", W_LEARNER, W_ENGINE, mask=W_MASK, segments=[[0, 1, 1, 1, -1]])
    kept = (1.5 * 0.25 * 1.0) ** (1 / 3)  # turn 1 = tokens 1-3: 0.72, inside [1/2, 2] though token 2 alone is not
    assert weight[0, :4].tolist() == pytest.approx([0.0, kept, kept, kept])
    assert corrected[0].tolist() == [True, False, False, False, False]
    tis, _ = weight_of("tis", W_LEARNER, W_ENGINE, mask=W_MASK, segments=[[0, 0, 0, 0, -1]])  # gspo: one sequence
    assert tis[0, :4].tolist() == pytest.approx([(3 * 1.5 * 0.25 * 1.0) ** 0.25] * 4)
    assert ratio_segments("ppo_clip", torch.tensor([[0, 1]])) is None
    assert ratio_segments("gspo", torch.tensor([[0, 1]])).tolist() == [[0, 0]]
    assert ratio_segments("turn_clip", torch.tensor([[0, 1]])).tolist() == [[0, 1]]


def test_gspo_uses_the_sequence_ratio_and_a_sequence_gradient() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    behaviour = torch.tensor([[-1.1, -1.9, -3.2, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss_bt, _ = policy_loss(
        "gspo",
        logp_bt=logp,
        old_logp_bt=behaviour,
        advantages_bt=torch.full((1, 4), 2.0, dtype=torch.float64),
        weight_bt=torch.ones(1, 4, dtype=torch.float64),
        mask_bt=mask,
        turn_bt=torch.zeros_like(mask),
        clip_scale_bt=torch.ones(1, 4, dtype=torch.float64),
        eps_low=1.0,
        eps_high=1.0,  # no clipping: the plain surrogate -s A
        dual_clip_c=None,
    )
    s = math.exp((0.1 - 0.1 + 0.2) / 3)
    assert loss_bt[0, :3].tolist() == pytest.approx([-2 * s] * 3) and loss_bt[0, 3] == 0
    aggregate(loss_bt, mask, "seq-mean-token-mean", Denominators(3, 1, 1)).backward()
    # d(-s A)/d logp_t = -A s / |y| for every sampled token
    assert logp.grad[0].tolist() == pytest.approx([-2 * s / 3] * 3 + [0.0])


def test_turn_ratio_and_adaptive_clip_are_per_turn() -> None:
    # turn 0 tokens: log ratios .1 .3 -> s0 = e^.2; turn 1: one token, log ratio -.5 -> s1 = e^-.5
    loss, clipped = loss_of(
        "turn_clip",
        [[0.0, 0.1, 0.3, 0.0, -0.5]],
        [[0.0] * 5],
        [[0.0, 1.0, 1.0, 0.0, -1.0]],
        mask=[[0, 1, 1, 0, 1]],
        turn=[[-1, 0, 0, -1, 1]],
        scale=[[1.0, 1.5, 1.5, 1.0, 0.5]],
        eps_low=0.2,
        eps_high=0.1,
    )
    # turn 0: bound 1 + 1.5 * 0.1 = 1.15 < e^.2 = 1.2214, A+ -> clipped, loss -1.15
    # turn 1: bound 1 - 0.5 * 0.2 = 0.9 > e^-.5 = 0.6065, A- -> clipped, loss 0.9
    assert loss[0].tolist() == pytest.approx([0.0, -1.15, -1.15, 0.0, 0.9])
    assert clipped[0].tolist() == [False, True, True, False, True]


def test_segment_mean_by_row_and_turn() -> None:
    values = torch.tensor([[1.0, 3.0, 10.0, 5.0], [2.0, 4.0, 6.0, 8.0]])
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]])
    turn = torch.tensor([[0, 0, -1, 1], [0, 0, 0, 0]])
    means = segment_mean(values, mask, turn)
    assert means[0, [0, 1, 3]].tolist() == [2.0, 2.0, 5.0] and means[1].tolist() == [5.0] * 4


VALUES = [[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]
MASK = [[1, 1, 1, 0], [1, 0, 0, 0]]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 2 + 3 + 4) / 4),
        ("seq-mean-token-mean", (6 / 3 + 4 / 1) / 2),
        ("seq-mean-token-sum", (6 + 4) / 2),
        ("seq-mean-token-sum-norm", (6 + 4) / (2 * 8)),
    ],
)
def test_aggregation_modes_by_hand_and_micro_batches_add_up(mode: str, expected: float) -> None:
    values, mask = torch.tensor(VALUES), torch.tensor(MASK)
    counts = Denominators(tokens=4, sequences=2, norm_length=8)
    assert aggregate(values, mask, mode, counts).item() == pytest.approx(expected)  # type: ignore[arg-type]
    split = sum(aggregate(values[i : i + 1], mask[i : i + 1], mode, counts).item() for i in range(2))  # type: ignore[arg-type]
    assert split == pytest.approx(expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_gradient_step_moves_sampled_tokens_with_the_advantage(kind: str, sign: float) -> None:
    torch.manual_seed(0)
    logits_tv = torch.nn.Parameter(torch.randn(6, 10))
    tokens_t = torch.tensor([3, 1, 4, 1, 5, 9])
    mask_bt = torch.tensor([[0, 1, 1, 1, 1, 1]])

    def sampled_logp() -> torch.Tensor:
        return torch.log_softmax(logits_tv, -1).gather(-1, tokens_t[:, None]).T  # [1, 6]

    before = sampled_logp().detach()
    loss_bt, _ = policy_loss(
        kind,  # type: ignore[arg-type]
        logp_bt=sampled_logp(),
        old_logp_bt=before,
        advantages_bt=torch.full((1, 6), sign),
        weight_bt=torch.ones(1, 6),
        mask_bt=mask_bt,
        turn_bt=torch.tensor([[-1, 0, 0, 1, 1, 1]]),
        clip_scale_bt=torch.ones(1, 6),
        eps_low=0.2,
        eps_high=0.2,
        dual_clip_c=3.0,
    )
    aggregate(loss_bt, mask_bt, "token-mean", Denominators(5, 1, 6)).backward()
    with torch.no_grad():
        logits_tv -= 0.5 * logits_tv.grad
    change = (sampled_logp().detach() - before)[0, 1:]
    assert (change * sign > 0).all(), change
