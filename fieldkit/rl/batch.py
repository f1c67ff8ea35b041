"""Episode groups -> TrainBatch. Nothing is re-tokenised: the token ids and behaviour log-probs are the engine's.

An episode's sequence is, turn by turn, `prompt_token_ids` (context: mask 0) then `response_token_ids` (sampled:
mask 1, with the engine's log-probs, the turn's advantage, clip scale and sampling temperature).
"""

from __future__ import annotations

from collections.abc import Sequence

from fieldkit.config import AlgorithmConfig
from fieldkit.generation import logprob_temperature
from fieldkit.gym.records import Episode
from fieldkit.rl.advantages import group_advantages
from fieldkit.rl.records import EpisodeAdvantages, TrainBatch, TrainSequence


def episode_tokens(episode: Episode) -> tuple[list[int], list[int]]:
    """(token ids, assistant mask) of the whole episode, in the order the model read them."""
    ids: list[int] = []
    mask: list[int] = []
    for turn in episode.turns:
        ids += turn.prompt_token_ids + turn.response_token_ids
        mask += [0] * len(turn.prompt_token_ids) + [1] * len(turn.response_token_ids)
    return ids, mask


def episode_sequence(episode: Episode, advantages: EpisodeAdvantages) -> TrainSequence | None:
    """The episode's tokens with per-token training fields; None when it sampled no token (nothing to train)."""
    ids, mask = episode_tokens(episode)
    if not any(mask):
        return None
    if mask[0]:
        raise ValueError(f"episode {episode.episode_id}: turn 0 has no prompt tokens; the first token needs context")
    behaviour: list[float] = []
    per_token_adv: list[float] = []
    turn_index: list[int] = []
    clip: list[float] = []
    temperature: list[float] = []
    for turn, adv, scale in zip(episode.turns, advantages.turn_advantages, advantages.turn_clip_scales, strict=True):
        n_ctx, n_resp = len(turn.prompt_token_ids), len(turn.response_token_ids)
        behaviour += [0.0] * n_ctx + turn.response_logprobs
        per_token_adv += [0.0] * n_ctx + [adv] * n_resp
        turn_index += [-1] * n_ctx + [turn.index] * n_resp
        clip += [1.0] * n_ctx + [scale] * n_resp
        temperature += [1.0] * n_ctx + [logprob_temperature(turn.temperature)] * n_resp
    return TrainSequence(
        episode_id=episode.episode_id,
        group_id=episode.group_id,
        policy_version=episode.policy_version,
        token_ids=ids,
        assistant_mask=mask,
        behaviour_logprobs=behaviour,
        advantages=per_token_adv,
        turn_index=turn_index,
        clip_scale=clip,
        temperature=temperature,
    )


def build_train_batch(groups: Sequence[Sequence[Episode]], cfg: AlgorithmConfig) -> TrainBatch:
    """Advantages per group with the configured estimator, then one sequence per episode that sampled tokens.

    With `drop_zero_signal_groups` a group whose advantages are all zero is left out (DAPO's dynamic sampling;
    the rollout side refills). Without it such a group still trains the KL term.
    """
    sequences: list[TrainSequence] = []
    zero_signal = dropped = 0
    for group in groups:
        result = group_advantages(group, cfg)
        zero_signal += result.zero_signal
        if cfg.drop_zero_signal_groups and all(a == 0 for e in result.episodes for a in e.turn_advantages):
            dropped += 1
            continue
        for episode, advantages in zip(group, result.episodes, strict=True):
            sequence = episode_sequence(episode, advantages)
            if sequence is not None:
                sequences.append(sequence)
    return TrainBatch(sequences=sequences, groups=len(groups), zero_signal_groups=zero_signal, dropped_groups=dropped)
