"""The lineage vocabulary and the Trial record: one row of the lineage store.

A trial is one measured attempt: a training step, a validation gate, a baseline evaluation, an SFT run, an ablation.
`kind` says what was measured; `status` says how it ended, in the shared vocabulary of the lineage ablation
(arXiv 2605.05724), which the Reward record reuses. `hypothesis`, `status` and `notes` are the load-bearing fields:
they are what a later reader (a person or an agent) needs to avoid repeating a dead end.

How a training run records itself (the driver's conventions):
- step 0: the validation evaluation of the starting policy, kind "validation-gate", status "baseline", id
  "<run>/gate-0000", parent the SFT trial it starts from (if any);
- each step: kind "rl-step", id "<run>/step-NNNN", parent the previous step (or gate-0000), core metric a training
  score (e.g. "train.reward"), status "keep" when the update was applied, a failure class when it was not;
- each validation gate: kind "validation-gate", id "<run>/gate-NNNN", parent the step whose adapter it scored,
  baseline gate-0000, core metric "validation.reward" with `fieldkit.eval.trial_metrics(...)` among its metrics,
  status "keep" when it is the best gate so far, else "discard"; the adapter path in `artifacts["adapter"]`.
Only validation gates compete for "best" in such a run, so training-pool scores never select a checkpoint; the test
split is never a trial's metric (it is only reported, by `fieldkit eval`). Trials recorded before the validation
split have kind "heldout-gate": they read back as "validation-gate" (LEGACY_KINDS).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Status = Literal[
    "keep",
    "discard",
    "crash",
    "eval_budget_overrun",
    "train_budget_overrun",
    "size_blocked",
    "preflight_crash",
    "harness_abort",
    "disqualified",
    "baseline",
]
STATUSES: tuple[str, ...] = get_args(Status)

# A trial whose run finished and whose metric can be trusted. The others ended in a failure class: their metric, if
# any, was measured on a broken or over-budget run and must never win "best".
COMPLETED_STATUSES = frozenset({"keep", "discard", "baseline"})

TrialKind = Literal["baseline", "rl-step", "validation-gate", "sft", "eval", "aborted"]
TRIAL_KINDS: tuple[str, ...] = get_args(TrialKind)
LEGACY_KINDS = {"heldout-gate": "validation-gate"}  # the gate's kind in stores written before the validation split

# Kinds that make a run an RL run. In an RL run only validation gates may be "best": the reference run had a step
# that scored 28/32 on its training pool and 9/158 held-out.
RL_KINDS = frozenset({"rl-step", "validation-gate"})

Direction = Literal["max", "min"]

JsonScalar = float | int | str | bool | None


def config_hash(config: dict[str, Any]) -> str:
    """The same short hash RunConfig.config_hash() gives for its model_dump(mode="json")."""
    canonical = json.dumps(config, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class Trial(BaseModel):
    """One trial. `seq` and `created_at` are assigned by the store; `trial_id` too when left empty."""

    model_config = ConfigDict(extra="forbid")

    trial_id: str = Field("", description="globally unique; the driver uses '<run>/step-0007', '<run>/gate-0010'")
    run_id: str = Field(min_length=1)
    parent_id: str | None = Field(default=None, description="the trial this one continues from (the previous step)")
    baseline_id: str | None = Field(default=None, description="the trial this one is compared against")
    kind: TrialKind
    status: Status
    step: int | None = Field(default=None, ge=0, description="training step, for curves and the card")
    hypothesis: str = ""
    metric_name: str = Field("", description="what `metric` is, e.g. 'validation.reward'")
    metric: float | None = None
    direction: Direction = "max"
    metrics: dict[str, JsonScalar] = Field(default_factory=dict)
    config_hash: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str = ""
    seeds: dict[str, int] = Field(default_factory=dict)
    packages: dict[str, str] = Field(default_factory=dict)
    wall: dict[str, float] = Field(default_factory=dict, description="seconds per phase: rollout_s, train_s, ...")
    artifacts: dict[str, str] = Field(default_factory=dict, description="name -> path: adapter, episodes, snapshot")
    labels: dict[str, str] = Field(default_factory=dict, description="free-form tags (imported TSV columns land here)")
    notes: str = ""
    created_at: str = ""
    seq: int = 0

    @field_validator("kind", mode="before")
    @classmethod
    def _current_kind(cls, value: Any) -> Any:
        return LEGACY_KINDS.get(value, value) if isinstance(value, str) else value

    @field_validator("trial_id", "parent_id", "baseline_id")
    @classmethod
    def _printable_id(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or any(c in value for c in "\t\n\r")):
            raise ValueError(f"id {value!r} must not contain whitespace at its ends, tabs or newlines")
        return value

    @field_validator("metric")
    @classmethod
    def _finite_metric(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"metric must be finite or None, got {value!r}")
        return value

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, JsonScalar]) -> dict[str, JsonScalar]:
        bad = [k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"metrics {', '.join(sorted(bad))} must be finite (use None for 'not measured')")
        return value

    @model_validator(mode="after")
    def _fill_config_hash(self) -> Trial:
        if self.config and not self.config_hash:
            self.config_hash = config_hash(self.config)
        if self.parent_id is not None and self.parent_id == self.trial_id:
            raise ValueError(f"trial {self.trial_id!r} cannot be its own parent")
        return self

    def value(self, metric: str | None = None) -> float | None:
        """The core metric, or the named entry of `metrics` when it is a number."""
        if metric is None or metric == self.metric_name:
            return self.metric
        found = self.metrics.get(metric)
        return float(found) if isinstance(found, int | float) and not isinstance(found, bool) else None
