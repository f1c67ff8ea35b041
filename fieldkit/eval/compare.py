"""Matched comparison of policies on the same tasks, with paired bootstrap intervals and a paired test on the deltas.

Every delta is against the baseline (the first policy unless named). Deltas of rates are in percentage points; of
turns and wall time in their units. The interval resamples tasks with replacement (the same resample for both
policies, so task difficulty cancels) and takes the percentile interval of the delta. The seed fixes the resamples:
the same inputs give the same report. The p-value is a two-sided exact sign test on the per-task differences (tasks
where the two policies tie carry no information and are left out); on task pass with one episode per task that is
exactly McNemar's exact test, a binomial test on the discordant tasks. It asks only which policy wins more tasks,
so it needs no assumption about how the differences are distributed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from fieldkit.eval.inputs import EvalInputError, name_ids
from fieldkit.eval.metrics import (
    METRICS,
    RATE_METRICS,
    default_ks,
    mean_pass_at_k,
    metric_values,
    per_task_values,
    slice_arrays,
)
from fieldkit.eval.outcomes import TaskOutcome, check_matched, fold_episodes
from fieldkit.gym.records import Episode

if TYPE_CHECKING:
    import numpy as np

DEFAULT_BOOTSTRAP = 2000
DEFAULT_CONFIDENCE = 0.95


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValues(Record):
    task_pass: float
    per_assertion: float | None  # None when the slice holds no assertion
    per_assertion_net: float | None  # None when the floor is unknown or every assertion already passed on the seed
    task_complete: float
    mean_turns: float
    mean_wall_s: float
    n_tasks: int
    n_episodes: int
    episodes_passed: int
    episodes_complete: int
    assertions_passed: int
    assertions_total: int
    assertions_floor: int | None  # of assertions_total, those the untouched seed passes; None when unknown


class Delta(Record):
    value: float | None
    low: float | None
    high: float | None
    unit: str = Field(description="'pp' (percentage points) for rates, 'turns' or 's' otherwise")
    p_value: float | None = Field(None, description="two-sided exact sign test over tasks; None when all tie")


class SliceResult(Record):
    group: str = Field(description="'all', 'persona' or 'kind'")
    name: str
    values: dict[str, MetricValues]  # policy -> metrics
    deltas: dict[str, dict[str, Delta]]  # policy (not the baseline) -> metric -> delta against the baseline


class Comparison(Record):
    policies: list[str]
    baseline: str
    split: str | None = Field(None, description="the corpus split the tasks come from ('test' for reported tables)")
    task_ids: list[str]
    bootstrap_samples: int
    confidence: float
    seed: int
    slices: list[SliceResult]
    pass_at_k: dict[str, dict[int, float]]  # policy -> k -> mean pass@k

    def slice(self, group: str, name: str = "all") -> SliceResult:
        for found in self.slices:
            if (found.group, found.name) == (group, name):
                return found
        raise KeyError(f"no slice {group}:{name}")


def compare(
    policies: Mapping[str, Sequence[Episode]],
    personas: Mapping[str, str],
    *,
    baseline: str | None = None,
    floors: Mapping[str, Mapping[str, int]] | None = None,
    split: str | None = None,
    bootstrap_samples: int = DEFAULT_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    ks: Sequence[int] | None = None,
) -> Comparison:
    """Compare policies (label -> episodes) on their common task set; deltas are against `baseline` (default: the
    first policy). `floors` (task_id -> kind -> assertions the untouched seed passes, `task_floors`) gives
    per-assertion net of the floor; without it that metric is None.

    One policy is allowed: the report then has values and no deltas.
    """
    import numpy as np

    if not policies:
        raise EvalInputError("no policies to evaluate")
    if not 0 < confidence < 1 or bootstrap_samples < 1:
        raise EvalInputError(
            f"need 0 < confidence < 1 and bootstrap_samples >= 1, got {confidence}, {bootstrap_samples}"
        )
    folded = {label: fold_episodes(label, episodes, personas) for label, episodes in policies.items()}
    task_ids = check_matched(folded)
    labels = list(folded)
    baseline = labels[0] if baseline is None else baseline
    if baseline not in folded:
        raise EvalInputError(f"baseline {baseline!r} is not one of the policies: {', '.join(labels)}")
    if floors is not None:
        _set_floors(folded, floors)
    rng = np.random.default_rng(seed)
    slices = [
        _slice(group, name, members, kind, folded, labels, baseline, rng, bootstrap_samples, confidence)
        for group, name, members, kind in _slice_specs(folded, task_ids)
    ]
    ordered = {label: [folded[label][t] for t in task_ids] for label in labels}
    k_values = sorted(set(ks)) if ks else default_ks(list(ordered.values()))
    return Comparison(
        policies=labels,
        baseline=baseline,
        split=split,
        task_ids=task_ids,
        bootstrap_samples=bootstrap_samples,
        confidence=confidence,
        seed=seed,
        slices=slices,
        pass_at_k={label: {k: mean_pass_at_k(label, ordered[label], k) for k in k_values} for label in labels},
    )


def trial_metrics(
    episodes: Sequence[Episode], prefix: str = "validation", floors: Mapping[str, Mapping[str, int]] | None = None
) -> dict[str, float | None]:
    """The headline metrics of one set of episodes as a lineage trial's metrics JSON: '<prefix>.task_pass', ...

    The driver records one trial per validation gate with these.
    """
    outcomes = fold_episodes(prefix, episodes, {e.task_id: "" for e in episodes})
    if floors is not None:
        _set_floors({prefix: outcomes}, floors)
    point = metric_values(slice_arrays([outcomes[t] for t in sorted(outcomes)]))
    values: dict[str, float | None] = {}
    for metric in METRICS:
        value = float(point[metric])
        values[f"{prefix}.{metric}"] = value if math.isfinite(value) else None  # per-assertion of no assertion
    return {**values, f"{prefix}.n_tasks": float(len(outcomes)), f"{prefix}.n_episodes": float(len(episodes))}


def _set_floors(folded: Mapping[str, Mapping[str, TaskOutcome]], floors: Mapping[str, Mapping[str, int]]) -> None:
    missing = {t for outcomes in folded.values() for t in outcomes} - set(floors)
    if missing:
        raise EvalInputError(f"no floor (seed workspace grade) for tasks: {name_ids(missing)}")
    for outcomes in folded.values():
        for task_id, outcome in outcomes.items():
            outcome.floor = dict(floors[task_id])


def sign_test(differences: Any) -> float | None:
    """Two-sided exact sign test: p of a split of wins at least as uneven as this one, if wins and losses were
    equally likely. Zeros (ties) and NaNs are left out; None when nothing is left."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    wins, losses = int((values > 0).sum()), int((values < 0).sum())
    n = wins + losses
    if n == 0:
        return None
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _slice_specs(
    folded: Mapping[str, Mapping[str, TaskOutcome]], task_ids: list[str]
) -> list[tuple[str, str, list[str], str | None]]:
    """(group, name, task ids, assertion kind) for all tasks, each persona and each assertion kind, sorted."""
    first = next(iter(folded.values()))
    specs: list[tuple[str, str, list[str], str | None]] = [("all", "all", task_ids, None)]
    for persona in sorted({first[t].persona for t in task_ids}):
        specs.append(("persona", persona, [t for t in task_ids if first[t].persona == persona], None))
    kinds = sorted({kind for outcomes in folded.values() for o in outcomes.values() for kind in o.assertions})
    for kind in kinds:
        members = [t for t in task_ids if any(kind in outcomes[t].assertions for outcomes in folded.values())]
        specs.append(("kind", kind, members, kind))
    return specs


def _slice(
    group: str,
    name: str,
    task_ids: list[str],
    kind: str | None,
    folded: Mapping[str, Mapping[str, TaskOutcome]],
    labels: list[str],
    baseline: str,
    rng: np.random.Generator,
    samples: int,
    confidence: float,
) -> SliceResult:
    import numpy as np

    arrays = {label: slice_arrays([folded[label][t] for t in task_ids], kind) for label in labels}
    point = {label: metric_values(arrays[label]) for label in labels}
    values = {label: _values(point[label], [folded[label][t] for t in task_ids], kind) for label in labels}
    deltas: dict[str, dict[str, Delta]] = {}
    if len(labels) > 1:
        resamples = rng.integers(0, len(task_ids), size=(samples, len(task_ids)))
        boot = {label: metric_values(arrays[label], resamples) for label in labels}
        per_task = {label: per_task_values(arrays[label]) for label in labels}
        tail = (1 - confidence) / 2 * 100
        for label in (other for other in labels if other != baseline):
            deltas[label] = {}
            for metric in METRICS:
                scale = 100.0 if metric in RATE_METRICS else 1.0
                diff = (boot[label][metric] - boot[baseline][metric]) * scale
                finite = diff[np.isfinite(diff)]
                value = float(point[label][metric] - point[baseline][metric]) * scale
                deltas[label][metric] = Delta(
                    value=value if np.isfinite(value) else None,
                    low=float(np.percentile(finite, tail)) if finite.size else None,
                    high=float(np.percentile(finite, 100 - tail)) if finite.size else None,
                    unit=_unit(metric),
                    p_value=sign_test(per_task[label][metric] - per_task[baseline][metric]),
                )
    return SliceResult(group=group, name=name, values=values, deltas=deltas)


def _values(point: Mapping[str, Any], outcomes: Sequence[TaskOutcome], kind: str | None) -> MetricValues:
    import numpy as np

    counts = [o.assertion_counts(kind) for o in outcomes]
    floors = [o.floor_count(kind) for o in outcomes]
    per_assertion, net = float(point["per_assertion"]), float(point["per_assertion_net"])
    return MetricValues(
        task_pass=float(point["task_pass"]),
        per_assertion=per_assertion if np.isfinite(per_assertion) else None,
        per_assertion_net=net if np.isfinite(net) else None,
        task_complete=float(point["task_complete"]),
        mean_turns=float(point["mean_turns"]),
        mean_wall_s=float(point["mean_wall_s"]),
        n_tasks=len(outcomes),
        n_episodes=sum(o.episodes for o in outcomes),
        episodes_passed=sum(o.passed for o in outcomes),
        episodes_complete=sum(o.complete for o in outcomes),
        assertions_passed=sum(p for p, _ in counts),
        assertions_total=sum(t for _, t in counts),
        assertions_floor=None if None in floors else sum(f for f in floors if f is not None),
    )


def _unit(metric: str) -> str:
    if metric in RATE_METRICS:
        return "pp"
    return "turns" if metric == "mean_turns" else "s"
