"""Policy-gradient losses on per-token tensors; torch is imported inside functions.

Shapes are in the names (`_bt` = [batch, time]) and every token tensor is aligned as in
`fieldkit.training.logprobs`: position t scores token t, `mask_bt` is 1 on the tokens the policy sampled.

Losses (`algorithm.loss`), each a per-token term that `aggregate` reduces:
- reinforce: -A * log pi (the reference's single on-policy epoch; the KL term is added by the caller);
- ppo_clip: -min(rho A, clip(rho, 1 - c eps_low, 1 + c eps_high) A), rho = pi / pi_behaviour per token
  (GRPO with eps_low = eps_high; DAPO's clip-higher with eps_high > eps_low);
- gspo: the same with the sequence ratio s = exp(mean_t log rho) (GSPO, arXiv 2507.18071);
- turn_clip: the same with the turn ratio s = exp(mean over the turn's tokens of log rho) (A2TGPO).
The sequence and turn ratios are straight-through per token: the value is s, the gradient reaches every token
through its own log-prob, so per-token advantages (T2PO, A2TGPO) still apply. c is the per-token clip scale
(1 except A2TGPO's adaptive clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

LossKind = Literal["reinforce", "ppo_clip", "gspo", "turn_clip"]
Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@dataclass(frozen=True)
class Denominators:
    """Whole-batch counts, so that the losses of micro-batches add up to the loss of the batch."""

    tokens: int  # sampled (mask 1) tokens in the batch
    sequences: int
    norm_length: int  # Dr.GRPO's constant L_max


def kl_k3(logp_bt: torch.Tensor, ref_logp_bt: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref): with d = log ref - log pi, exp(d) - d - 1 (>= 0, unbiased)."""
    import torch

    d_bt = ref_logp_bt - logp_bt
    return torch.exp(d_bt) - d_bt - 1


def segment_mean(values_bt: torch.Tensor, mask_bt: torch.Tensor, segment_bt: torch.Tensor) -> torch.Tensor:
    """Mean of `values_bt` over the masked tokens of each (row, segment id), broadcast back to those tokens."""
    import torch

    batch, time = values_bt.shape
    segment_bt = segment_bt.clamp(min=0)
    n_segments = int(segment_bt.max().item()) + 1
    keys = (torch.arange(batch, device=values_bt.device)[:, None] * n_segments + segment_bt).flatten()
    weights = mask_bt.to(values_bt.dtype).flatten()
    sums = torch.zeros(batch * n_segments, dtype=values_bt.dtype, device=values_bt.device)
    sums = sums.index_add(0, keys, values_bt.flatten() * weights)
    counts = torch.zeros_like(sums).index_add(0, keys, weights)
    return (sums / counts.clamp(min=1))[keys].view(batch, time)


def policy_loss(
    kind: LossKind,
    *,
    logp_bt: torch.Tensor,
    behaviour_logp_bt: torch.Tensor,
    advantages_bt: torch.Tensor,
    mask_bt: torch.Tensor,
    turn_bt: torch.Tensor,
    clip_scale_bt: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss_bt, clipped_bt): clipped_bt marks sampled tokens whose clipped term won the min."""
    import torch

    mask_f_bt = mask_bt.to(logp_bt.dtype)
    if kind == "reinforce":
        return -advantages_bt * logp_bt * mask_f_bt, torch.zeros_like(mask_bt, dtype=torch.bool)
    log_ratio_bt = (logp_bt - behaviour_logp_bt) * mask_f_bt
    if kind in ("gspo", "turn_clip"):
        segment_bt = torch.zeros_like(turn_bt) if kind == "gspo" else turn_bt
        shared_bt = segment_mean(log_ratio_bt.detach(), mask_bt, segment_bt)
        log_ratio_bt = shared_bt + logp_bt - logp_bt.detach()
    elif kind != "ppo_clip":
        raise ValueError(f"algorithm.loss = {kind!r}: unknown; known: reinforce, ppo_clip, gspo, turn_clip")
    ratio_bt = torch.exp(log_ratio_bt)
    bounded_bt = torch.clamp(ratio_bt, 1 - clip_scale_bt * eps_low, 1 + clip_scale_bt * eps_high)
    unclipped_bt = ratio_bt * advantages_bt
    clipped_term_bt = bounded_bt * advantages_bt
    loss_bt = -torch.minimum(unclipped_bt, clipped_term_bt) * mask_f_bt
    return loss_bt, (clipped_term_bt < unclipped_bt) & mask_bt.bool()


def aggregate(values_bt: torch.Tensor, mask_bt: torch.Tensor, mode: Aggregation, counts: Denominators) -> torch.Tensor:
    """Reduce per-token values to one number (a micro-batch's share of the batch's):
    token-mean: sum / tokens; seq-mean-token-mean: sum over sequences of (sum / own tokens) / sequences;
    seq-mean-token-sum: sum / sequences; seq-mean-token-sum-norm (Dr.GRPO): sum / (sequences * L_max)."""
    mask_f_bt = mask_bt.to(values_bt.dtype)
    masked_bt = values_bt * mask_f_bt
    if mode == "token-mean":
        return masked_bt.sum() / counts.tokens
    if mode == "seq-mean-token-mean":
        return (masked_bt.sum(1) / mask_f_bt.sum(1).clamp(min=1)).sum() / counts.sequences
    if mode == "seq-mean-token-sum":
        return masked_bt.sum() / counts.sequences
    if mode == "seq-mean-token-sum-norm":
        return masked_bt.sum() / (counts.sequences * counts.norm_length)
    raise ValueError(f"algorithm.aggregation = {mode!r}: unknown")
