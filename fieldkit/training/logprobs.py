"""Per-token log-probs (and entropies) of a causal LM, aligned with the tokens they score.

Alignment: `logp_bt[b, t]` is log π(ids[b, t] | ids[b, <t]); position 0 has no context and holds 0. With this
alignment the assistant-token mask of a TrainBatch (1 where the model sampled token t) indexes the log-probs
directly, and the behaviour log-probs the engine returned for a turn sit at the same positions.

Temperature: with `temperature_bt`, token t is scored under softmax(logits_{t-1} / temperature_bt[t]), the
distribution the engine sampled it from (fieldkit.generation states the convention); without it, at T = 1.

Shapes are in the names: `_bt` is [batch, time], `_btv` is [batch, time, vocab]. torch is imported inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def token_logprobs(
    model: Any,
    input_ids_bt: torch.Tensor,
    attention_mask_bt: torch.Tensor | None = None,
    *,
    temperature_bt: torch.Tensor | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (logp_bt, entropy_bt or None), both float32 [B, T]; logp_bt is differentiable when grad is enabled,
    entropy_bt never is. The entropy is that of the same (tempered) distribution.

    `attention_mask_bt` marks real tokens (1) against right padding (0); padded positions come back as 0.
    The full-vocabulary softmax is computed in float32 one sequence at a time: without grad (reference pass, probe)
    that bounds the float32 copy to one [T, V] buffer instead of [B, T, V].
    """
    import torch

    if attention_mask_bt is None:
        attention_mask_bt = torch.ones_like(input_ids_bt)
    logits_btv = model(input_ids=input_ids_bt, attention_mask=attention_mask_bt).logits
    logp_rows, entropy_rows = [], []
    for b in range(input_ids_bt.shape[0]):
        # logits at t-1 predict token t
        logits_tv = logits_btv[b, :-1].float()
        if temperature_bt is not None:
            logits_tv = logits_tv / temperature_bt[b, 1:].unsqueeze(-1)
        log_probs_tv = torch.log_softmax(logits_tv, dim=-1)
        logp_rows.append(log_probs_tv.gather(-1, input_ids_bt[b, 1:].unsqueeze(-1)).squeeze(-1))
        if with_entropy:
            with torch.no_grad():  # a metric, never a loss term: no graph, no saved [T, V] buffers
                entropy_rows.append(-(log_probs_tv.exp() * log_probs_tv).sum(-1))
    valid_bt = attention_mask_bt[:, 1:].to(torch.float32)
    first_b1 = torch.zeros(input_ids_bt.shape[0], 1, dtype=torch.float32, device=logits_btv.device)
    logp_bt = torch.cat([first_b1, torch.stack(logp_rows) * valid_bt], dim=1)
    entropy_bt = torch.cat([first_b1, torch.stack(entropy_rows) * valid_bt], dim=1) if with_entropy else None
    return logp_bt, entropy_bt


def continuation_logprobs(model: Any, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
    """Log-probs of `continuation_ids` given `prompt_ids`, one per continuation token, without grad.

    What the adapter probe records and the policy server's prompt-logprob check recomputes.
    """
    import torch

    if not prompt_ids or not continuation_ids:
        raise ValueError(
            f"prompt_ids ({len(prompt_ids)} tokens) and continuation_ids ({len(continuation_ids)}) must be non-empty"
        )
    device = next(model.parameters()).device
    ids_bt = torch.tensor([prompt_ids + continuation_ids], dtype=torch.long, device=device)
    with torch.no_grad():
        logp_bt, _ = token_logprobs(model, ids_bt)
    return logp_bt[0, len(prompt_ids) :].tolist()
