"""Pure queries over a list of trials: which may be "best", the ranking, the chain root -> trial.

They take trials in store order (by `seq`), so the same database state gives the same answers, ties included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fieldkit.lineage.records import COMPLETED_STATUSES, RL_KINDS, Direction, Trial


class LineageError(ValueError):
    """A lineage request that cannot be answered or a record that cannot be stored; the message names the ids."""


def rl_runs(trials: Iterable[Trial]) -> set[str]:
    return {t.run_id for t in trials if t.kind in RL_KINDS}


def eligible(trials: Sequence[Trial], metric: str | None = None) -> list[Trial]:
    """Trials that may be ranked: a completed status, a value for the metric, and in an RL run a validation gate."""
    rl = rl_runs(trials)
    return [
        t
        for t in trials
        if t.status in COMPLETED_STATUSES
        and t.value(metric) is not None
        and (t.run_id not in rl or t.kind == "validation-gate")
    ]


def ranked(trials: Sequence[Trial], metric: str | None = None, direction: Direction | None = None) -> list[Trial]:
    """Eligible trials, best first; ties go to the earlier trial. Mixed directions are refused, naming the trials."""
    candidates = eligible(trials, metric)
    if not candidates:
        return []
    if direction is None:
        directions = {t.direction for t in candidates}
        if len(directions) > 1:
            by_direction = {d: [t.trial_id for t in candidates if t.direction == d][:5] for d in sorted(directions)}
            raise LineageError(
                f"trials disagree on the metric's direction ({by_direction}); pass a run or a direction explicitly"
            )
        direction = directions.pop()
    sign = -1.0 if direction == "max" else 1.0

    def key(t: Trial) -> tuple[float, int]:
        value = t.value(metric)
        assert value is not None  # eligible() kept only trials with a value
        return (sign * value, t.seq)

    return sorted(candidates, key=key)


def best_of(trials: Sequence[Trial], metric: str | None = None, direction: Direction | None = None) -> Trial | None:
    order = ranked(trials, metric, direction)
    return order[0] if order else None


def chain_to(by_id: Mapping[str, Trial], trial_id: str) -> list[Trial]:
    """Root first, `trial_id` last, following parent links (the store only accepts parents recorded earlier)."""
    if trial_id not in by_id:
        raise LineageError(f"no trial {trial_id!r} in the lineage store")
    chain: list[Trial] = []
    current: str | None = trial_id
    while current is not None:
        trial = by_id[current]
        chain.append(trial)
        current = trial.parent_id
    chain.reverse()
    return chain
