"""Records between the learner and the policy server."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AdapterProbe(BaseModel):
    """A fixed token sequence and the log-probs the learner computed for it with the adapter it publishes.

    The policy server recomputes them after loading; a disagreement beyond tolerance means the engine is not
    serving the weights the learner trained, and the version is refused.
    """

    model_config = ConfigDict(extra="forbid")
    prompt_token_ids: list[int] = Field(min_length=1)
    continuation_token_ids: list[int] = Field(min_length=1)
    logprobs: list[float]

    @model_validator(mode="after")
    def _one_logprob_per_continuation_token(self) -> AdapterProbe:
        if len(self.logprobs) != len(self.continuation_token_ids):
            raise ValueError(
                f"probe has {len(self.logprobs)} log-probs for {len(self.continuation_token_ids)} continuation tokens"
            )
        return self


class AdapterRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: int = Field(ge=0)
    path: str
    rank: int = Field(ge=1)
    probe: AdapterProbe | None = None
