"""The ClawGym metrics over a set of tasks, vectorised so a bootstrap evaluates thousands of task resamples at once.

Definitions (REFERENCE.md §1):
- task pass: a task passes when all its assertions pass; the rate is the mean over tasks of the task's pass
  fraction over its episodes (with one episode per task: passed/tasks; with n: the unbiased pass@1).
- per-assertion: sum of passed assertions / sum of assertions over the set (episodes pooled).
- per-assertion net of the floor: (passed - floor) / (total - floor) over the set, where floor counts the assertions
  the untouched seeded workspace already passes (an agent that does nothing scores 0; one that breaks what was
  passing scores below 0). Unknown (None) when the tasks' seeds are not given.
- task_complete: the episode ended with the agent's TASK_COMPLETE, averaged like task pass.
- mean turns, mean wall per task: per-task means over episodes, then the mean over tasks.
- pass@k: the unbiased estimator 1 - C(n-c, k)/C(n, k) per task (n episodes, c passes), averaged over tasks.
A slice by persona keeps that persona's tasks. A slice by assertion kind keeps the tasks that have an assertion of
that kind; its per-assertion counts only assertions of that kind, its other metrics are those tasks' outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fieldkit.eval.inputs import EvalInputError, name_ids
from fieldkit.eval.outcomes import TaskOutcome

METRICS = ("task_pass", "per_assertion", "per_assertion_net", "task_complete", "mean_turns", "mean_wall_s")
RATE_METRICS = frozenset({"task_pass", "per_assertion", "per_assertion_net", "task_complete"})


@dataclass(frozen=True)
class SliceArrays:
    """One policy's per-task numbers for one slice, tasks in a fixed order shared by every policy."""

    task_pass: Any  # numpy arrays, one entry per task (numpy is imported inside functions)
    task_complete: Any
    mean_turns: Any
    mean_wall_s: Any
    assertions_passed: Any
    assertions_total: Any
    assertions_floor: Any  # NaN where the floor is unknown


def slice_arrays(outcomes: Sequence[TaskOutcome], kind: str | None = None) -> SliceArrays:
    import numpy as np

    episodes = np.array([o.episodes for o in outcomes], dtype=float)
    counts = np.array([o.assertion_counts(kind) for o in outcomes], dtype=float).reshape(len(outcomes), 2)
    return SliceArrays(
        task_pass=np.array([o.passed for o in outcomes]) / episodes,
        task_complete=np.array([o.complete for o in outcomes]) / episodes,
        mean_turns=np.array([o.turns for o in outcomes]) / episodes,
        mean_wall_s=np.array([o.wall_s for o in outcomes]) / episodes,
        assertions_passed=counts[:, 0],
        assertions_total=counts[:, 1],
        assertions_floor=np.array([_nan_if_none(o.floor_count(kind)) for o in outcomes], dtype=float),
    )


def _nan_if_none(value: int | None) -> float:
    return math.nan if value is None else float(value)


def _ratio(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, NaN where the denominator is not positive (or either is NaN)."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def metric_values(arrays: SliceArrays, idx: Any = None) -> dict[str, Any]:
    """Every metric for the tasks at `idx` (shape (..., T) of task positions; None = each task once).

    Returns arrays of shape idx.shape[:-1] (a 0-d array for None). per-assertion is NaN where no assertion was drawn,
    per-assertion net where every drawn assertion already passed on the seed or the floor is unknown.
    """
    import numpy as np

    if idx is None:
        idx = np.arange(len(arrays.task_pass))
    passed = arrays.assertions_passed[idx].sum(axis=-1)
    total = arrays.assertions_total[idx].sum(axis=-1)
    floor = arrays.assertions_floor[idx].sum(axis=-1)
    return {
        "task_pass": arrays.task_pass[idx].mean(axis=-1),
        "per_assertion": _ratio(passed, total),
        "per_assertion_net": _ratio(passed - floor, total - floor),
        "task_complete": arrays.task_complete[idx].mean(axis=-1),
        "mean_turns": arrays.mean_turns[idx].mean(axis=-1),
        "mean_wall_s": arrays.mean_wall_s[idx].mean(axis=-1),
    }


def per_task_values(arrays: SliceArrays) -> dict[str, Any]:
    """Each metric task by task (per-assertion: the task's own passed/total), for a paired per-task test."""
    return {
        "task_pass": arrays.task_pass,
        "per_assertion": _ratio(arrays.assertions_passed, arrays.assertions_total),
        "per_assertion_net": _ratio(
            arrays.assertions_passed - arrays.assertions_floor, arrays.assertions_total - arrays.assertions_floor
        ),
        "task_complete": arrays.task_complete,
        "mean_turns": arrays.mean_turns,
        "mean_wall_s": arrays.mean_wall_s,
    }


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task: n samples, c of them correct (Chen et al. 2021): 1 - C(n-c, k)/C(n, k)."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(policy: str, outcomes: Sequence[TaskOutcome], k: int) -> float:
    short = [o.task_id for o in outcomes if o.episodes < k]
    if short:
        raise EvalInputError(
            f"policy {policy!r}: pass@{k} needs at least {k} episodes per task; fewer in {name_ids(short)}"
        )
    return sum(pass_at_k(o.episodes, o.passed, k) for o in outcomes) / len(outcomes)


def default_ks(outcomes: Sequence[Sequence[TaskOutcome]]) -> list[int]:
    """1, 2, 4, ... up to the fewest episodes any policy ran on any task."""
    fewest = min(o.episodes for policy in outcomes for o in policy)
    return [2**i for i in range(int(math.log2(fewest)) + 1)]
