"""Losses against hand-computed values, micro-batch additivity, and the sign of a gradient step."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from fieldkit.rl.losses import Denominators, aggregate, kl_k3, policy_loss, segment_mean  # noqa: E402

KINDS = ["reinforce", "ppo_clip", "gspo", "turn_clip"]


def loss_of(kind: str, logp, behaviour, adv, *, mask=None, turn=None, scale=None, eps_low=0.2, eps_high=0.2):
    logp_bt = torch.tensor(logp, dtype=torch.float64)
    mask_bt = torch.tensor(mask) if mask is not None else torch.ones_like(logp_bt, dtype=torch.long)
    return policy_loss(
        kind,  # type: ignore[arg-type]
        logp_bt=logp_bt,
        behaviour_logp_bt=torch.tensor(behaviour, dtype=torch.float64),
        advantages_bt=torch.tensor(adv, dtype=torch.float64),
        mask_bt=mask_bt,
        turn_bt=torch.tensor(turn) if turn is not None else torch.zeros_like(mask_bt),
        clip_scale_bt=torch.tensor(scale, dtype=torch.float64) if scale is not None else torch.ones_like(logp_bt),
        eps_low=eps_low,
        eps_high=eps_high,
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


def test_gspo_uses_the_sequence_ratio_and_a_sequence_gradient() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    behaviour = torch.tensor([[-1.1, -1.9, -3.2, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss_bt, _ = policy_loss(
        "gspo",
        logp_bt=logp,
        behaviour_logp_bt=behaviour,
        advantages_bt=torch.full((1, 4), 2.0, dtype=torch.float64),
        mask_bt=mask,
        turn_bt=torch.zeros_like(mask),
        clip_scale_bt=torch.ones(1, 4, dtype=torch.float64),
        eps_low=1.0,
        eps_high=1.0,  # no clipping: the plain surrogate -s A
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
        behaviour_logp_bt=before,
        advantages_bt=torch.full((1, 6), sign),
        mask_bt=mask_bt,
        turn_bt=torch.tensor([[-1, 0, 0, 1, 1, 1]]),
        clip_scale_bt=torch.ones(1, 6),
        eps_low=0.2,
        eps_high=0.2,
    )
    aggregate(loss_bt, mask_bt, "token-mean", Denominators(5, 1, 6)).backward()
    with torch.no_grad():
        logits_tv -= 0.5 * logits_tv.grad
    change = (sampled_logp().detach() - before)[0, 1:]
    assert (change * sign > 0).all(), change
