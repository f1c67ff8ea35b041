"""One policy's episodes folded per task: how many ran, passed, completed, their turns, wall time and assertions,
and the task's floor: the assertions its untouched seeded workspace already passes.

Everything the metrics need is a per-task sum, so the bootstrap can resample tasks without touching episodes again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fieldkit.eval.inputs import EvalInputError, name_ids
from fieldkit.gym.grader import floor_grade
from fieldkit.gym.records import Episode
from fieldkit.gym.task import Task


@dataclass
class TaskOutcome:
    task_id: str
    persona: str
    episodes: int = 0
    passed: int = 0
    complete: int = 0
    turns: int = 0
    wall_s: float = 0.0
    assertions: dict[str, list[int]] = field(default_factory=dict)  # kind -> [passed, total], summed over episodes
    floor: dict[str, int] | None = None  # kind -> assertions the untouched seed passes (one episode's worth)

    def assertion_counts(self, kind: str | None = None) -> tuple[int, int]:
        """(passed, total) for one assertion kind, or over all kinds."""
        if kind is not None:
            passed, total = self.assertions.get(kind, (0, 0))
            return passed, total
        return sum(p for p, _ in self.assertions.values()), sum(t for _, t in self.assertions.values())

    def floor_count(self, kind: str | None = None) -> int | None:
        """Assertions (of one kind, or all) the untouched seed passes, summed over episodes; None when unknown."""
        if self.floor is None:
            return None
        per_episode = self.floor.get(kind, 0) if kind is not None else sum(self.floor.values())
        return per_episode * self.episodes


def task_floors(tasks: Iterable[Task]) -> dict[str, dict[str, int]]:
    """task_id -> assertion kind -> how many of the task's assertions of that kind the untouched seed passes."""
    floors: dict[str, dict[str, int]] = {}
    for task in tasks:
        counts = floors.setdefault(task.task_id, {})
        for result in floor_grade(task).assertions:
            counts[result.kind] = counts.get(result.kind, 0) + result.passed
    return floors


def fold_episodes(policy: str, episodes: Sequence[Episode], personas: Mapping[str, str]) -> dict[str, TaskOutcome]:
    """task_id -> TaskOutcome. Refuses, naming the ids: no episodes, repeated episode ids, ungraded episodes, and
    tasks the persona mapping does not know."""
    if not episodes:
        raise EvalInputError(f"policy {policy!r}: no episodes")
    repeated = [eid for eid, n in Counter(e.episode_id for e in episodes).items() if n > 1]
    if repeated:
        raise EvalInputError(f"policy {policy!r}: episode ids appear more than once: {name_ids(repeated)}")
    ungraded = [e for e in episodes if e.grade is None]
    if ungraded:
        raise EvalInputError(
            f"policy {policy!r}: episodes without a grade (grade them, or leave them out) in tasks "
            f"{name_ids(e.task_id for e in ungraded)}; episodes {name_ids(e.episode_id for e in ungraded)}"
        )
    unknown = {e.task_id for e in episodes} - set(personas)
    if unknown:
        raise EvalInputError(f"policy {policy!r}: tasks with no persona in the task file: {name_ids(unknown)}")

    outcomes: dict[str, TaskOutcome] = {}
    for episode in episodes:
        grade = episode.grade
        assert grade is not None  # ungraded episodes were refused above
        outcome = outcomes.setdefault(episode.task_id, TaskOutcome(episode.task_id, personas[episode.task_id]))
        outcome.episodes += 1
        outcome.passed += grade.passed
        outcome.complete += episode.task_complete
        outcome.turns += len(episode.turns)
        outcome.wall_s += episode.wall_s
        for result in grade.assertions:
            counts = outcome.assertions.setdefault(result.kind, [0, 0])
            counts[0] += result.passed
            counts[1] += 1
    return outcomes


def check_matched(outcomes: Mapping[str, Mapping[str, TaskOutcome]]) -> list[str]:
    """The sorted task ids every policy ran; a mismatch names, per policy, the tasks missing and the extra ones."""
    policies = list(outcomes)
    reference = set(outcomes[policies[0]])
    problems = []
    for policy in policies[1:]:
        tasks = set(outcomes[policy])
        missing, extra = reference - tasks, tasks - reference
        if missing:
            problems.append(f"policy {policy!r} lacks tasks that {policies[0]!r} ran: {name_ids(missing)}")
        if extra:
            problems.append(f"policy {policy!r} ran tasks that {policies[0]!r} did not: {name_ids(extra)}")
    if problems:
        raise EvalInputError("policies were not run on the same tasks:\n  " + "\n  ".join(problems))
    return sorted(reference)
