"""Policy-gradient losses on per-token tensors; torch is imported inside functions.

Shapes are in the names (`_bt` = [batch, time]) and every token tensor is aligned as in
`fieldkit.training.logprobs`: position t scores token t, `mask_bt` is 1 on the tokens the policy sampled.

Losses (`algorithm.loss`), each a per-token term that `aggregate` reduces, times the token's mismatch weight w:
- reinforce: -w A log pi (the reference's single on-policy epoch; the KL term is added by the caller);
- ppo_clip: -w min(rho A, clip(rho, 1 - c eps_low, 1 + c eps_high) A), rho = pi / pi_old per token
  (GRPO with eps_low = eps_high; DAPO's clip-higher with eps_high > eps_low);
- gspo: the same with the sequence ratio s = exp(mean_t log rho) (GSPO, arXiv 2507.18071);
- turn_clip: the same with the turn ratio s = exp(mean over the turn's tokens of log rho) (A2TGPO).
The sequence and turn ratios are straight-through per token: the value is s, the gradient reaches every token
through its own log-prob, so per-token advantages (T2PO, A2TGPO) still apply. c is the per-token clip scale
(1 except A2TGPO's adaptive clip). Dual-clip (arXiv 1912.09729): where A < 0 the objective is also bounded
below by dual_clip_c * A, so a ratio far above 1 on a stale or mismatched token cannot scale a negative
advantage without limit.

pi_old is the learner's own log-probs before the update (or the engine's, `behaviour_logprobs: engine`); w
corrects for the engine having sampled instead (`mismatch_weight`: TIS truncates pi_old / pi_engine at a cap,
MIS masks what lies outside [1/cap, cap]; "Your efficient RL framework secretly brings you off-policy RL
training", Yao et al. 2025, as verl and TRL implement it), taken at the level of the loss's ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

LossKind = Literal["reinforce", "ppo_clip", "gspo", "turn_clip"]
Correction = Literal["none", "tis", "mis"]
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


def ratio_segments(kind: LossKind, turn_bt: torch.Tensor) -> torch.Tensor | None:
    """What one ratio covers: None = each token (reinforce, ppo_clip), else a segment id per token: the whole
    sequence (gspo) or the turn (turn_clip)."""
    import torch

    if kind in ("reinforce", "ppo_clip"):
        return None
    if kind == "gspo":
        return torch.zeros_like(turn_bt)
    if kind == "turn_clip":
        return turn_bt
    raise ValueError(f"algorithm.loss = {kind!r}: unknown; known: reinforce, ppo_clip, gspo, turn_clip")


def mismatch_weight(
    correction: Correction,
    *,
    learner_logp_bt: torch.Tensor,
    engine_logp_bt: torch.Tensor,
    mask_bt: torch.Tensor,
    segments_bt: torch.Tensor | None,
    cap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight_bt, corrected_bt): w = pi_learner / pi_engine of the sampled tokens before the update (the geometric
    mean over each segment when `segments_bt` is given), truncated at `cap` (tis) or zeroed outside [1/cap, cap]
    (mis), 1 everywhere with none; corrected_bt marks the sampled tokens whose weight was truncated or masked.
    Constants: no gradient flows through them."""
    import torch

    mask_f_bt = mask_bt.to(learner_logp_bt.dtype)
    log_w_bt = (learner_logp_bt - engine_logp_bt).detach() * mask_f_bt
    if segments_bt is not None:
        log_w_bt = segment_mean(log_w_bt, mask_bt, segments_bt)
    w_bt = torch.exp(log_w_bt)
    if correction == "none":
        return torch.ones_like(w_bt), torch.zeros_like(mask_bt, dtype=torch.bool)
    if correction == "tis":
        return w_bt.clamp(max=cap), (w_bt > cap) & mask_bt.bool()
    if correction == "mis":
        outside_bt = ((w_bt > cap) | (w_bt < 1 / cap)) & mask_bt.bool()
        return torch.where(outside_bt, torch.zeros_like(w_bt), w_bt), outside_bt
    raise ValueError(f"algorithm.is_correction = {correction!r}: unknown; known: none, tis, mis")


def policy_loss(
    kind: LossKind,
    *,
    logp_bt: torch.Tensor,
    old_logp_bt: torch.Tensor,
    advantages_bt: torch.Tensor,
    weight_bt: torch.Tensor,
    mask_bt: torch.Tensor,
    turn_bt: torch.Tensor,
    clip_scale_bt: torch.Tensor,
    eps_low: float,
    eps_high: float,
    dual_clip_c: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss_bt, clipped_bt): clipped_bt marks sampled tokens where a clip bound (PPO's or the dual
    clip) won."""
    import torch

    mask_f_bt = mask_bt.to(logp_bt.dtype)
    segments_bt = ratio_segments(kind, turn_bt)
    if kind == "reinforce":
        return -weight_bt * advantages_bt * logp_bt * mask_f_bt, torch.zeros_like(mask_bt, dtype=torch.bool)
    log_ratio_bt = (logp_bt - old_logp_bt) * mask_f_bt
    if segments_bt is not None:
        shared_bt = segment_mean(log_ratio_bt.detach(), mask_bt, segments_bt)
        log_ratio_bt = shared_bt + logp_bt - logp_bt.detach()
    ratio_bt = torch.exp(log_ratio_bt)
    bounded_bt = torch.clamp(ratio_bt, 1 - clip_scale_bt * eps_low, 1 + clip_scale_bt * eps_high)
    unclipped_bt = ratio_bt * advantages_bt
    clipped_term_bt = bounded_bt * advantages_bt
    objective_bt = torch.minimum(unclipped_bt, clipped_term_bt)
    clipped_bt = clipped_term_bt < unclipped_bt
    if dual_clip_c is not None:
        floor_bt = dual_clip_c * advantages_bt
        dual_bt = (advantages_bt < 0) & (objective_bt < floor_bt)
        objective_bt = torch.where(dual_bt, floor_bt, objective_bt)
        clipped_bt = clipped_bt | dual_bt
    return -weight_bt * objective_bt * mask_f_bt, clipped_bt & mask_bt.bool()


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
