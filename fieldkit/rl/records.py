"""What the advantage estimators produce and what the learner consumes. Pydantic: they cross Ray actors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpisodeAdvantages(Record):
    """One advantage and one clip scale per turn; the turn's response tokens all get them."""

    episode_id: str
    turn_advantages: list[float]
    turn_clip_scales: list[float]  # 1.0 except A2TGPO's adaptive clip

    @model_validator(mode="after")
    def _one_scale_per_turn(self) -> EpisodeAdvantages:
        if len(self.turn_clip_scales) != len(self.turn_advantages):
            raise ValueError(
                f"episode {self.episode_id}: {len(self.turn_clip_scales)} clip scales for "
                f"{len(self.turn_advantages)} turns"
            )
        return self


class GroupAdvantages(Record):
    episodes: list[EpisodeAdvantages]
    zero_signal: bool  # every reward in the group was equal: the outcome says nothing about which rollout was better


class TrainSequence(Record):
    """One episode as the learner sees it: every list has one entry per token, in the order the model read them.

    Context tokens (prompts, observations) have mask 0, behaviour log-prob 0, advantage 0, turn -1, clip scale 1,
    temperature 1. A sampled token's temperature is the T its behaviour log-prob is taken at (fieldkit.generation).
    """

    episode_id: str
    group_id: str
    policy_version: int
    token_ids: list[int] = Field(min_length=2)
    assistant_mask: list[int]
    behaviour_logprobs: list[float]
    advantages: list[float]
    turn_index: list[int]
    clip_scale: list[float]
    temperature: list[float]

    @model_validator(mode="after")
    def _aligned(self) -> TrainSequence:
        n = len(self.token_ids)
        for name in ("assistant_mask", "behaviour_logprobs", "advantages", "turn_index", "clip_scale", "temperature"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"episode {self.episode_id}: {name} has {len(getattr(self, name))} entries, {n} tokens"
                )
        if self.assistant_mask[0]:
            raise ValueError(f"episode {self.episode_id}: the first token has no context and cannot be trained on")
        return self

    @property
    def n_assistant_tokens(self) -> int:
        return sum(self.assistant_mask)


class TrainBatch(Record):
    sequences: list[TrainSequence]
    groups: int  # groups the batch was built from, including dropped ones
    zero_signal_groups: int  # groups whose rewards were all equal
    dropped_groups: int = 0  # zero-signal groups left out (DAPO's dynamic sampling)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.sequences)

    @property
    def n_assistant_tokens(self) -> int:
        return sum(s.n_assistant_tokens for s in self.sequences)
