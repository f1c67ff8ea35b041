"""The corpus on disk: tasks.jsonl and the frozen train/held-out split.json.

The split is stratified by persona and seeded; once split.json exists it is reused as it is (a held-out set that
moved between runs would make every comparison meaningless), and a split that no longer matches the tasks is an
error naming the ids, never silently redrawn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, model_validator

from fieldkit.gym.records import Record
from fieldkit.gym.task import Task
from fieldkit.gym.validate import load_tasks
from fieldkit.runs import atomic_write_bytes

TASKS_FILE = "tasks.jsonl"
SPLIT_FILE = "split.json"
DEFAULT_TRAIN = 42  # the reference: 42 training tasks, 158 held out of 200


class Split(Record):
    seed: int
    train: list[str]
    heldout: list[str]
    note: str = Field("stratified by persona; frozen: reused as is once written", description="for readers")

    @model_validator(mode="after")
    def _disjoint(self) -> Split:
        both = set(self.train) & set(self.heldout)
        if both:
            raise ValueError(f"task ids in both train and heldout: {sorted(both)[:5]}")
        return self


def task_lines(tasks: Sequence[Task]) -> bytes:
    """The canonical JSONL bytes of a task list (the generator's output is compared byte for byte)."""
    return "".join(t.model_dump_json(exclude_none=True) + "\n" for t in tasks).encode()


def make_split(tasks: Sequence[Task], n_train: int = DEFAULT_TRAIN, seed: int = 0) -> Split:
    """A seeded split with each persona's share of the training set proportional to its share of the tasks."""
    if not 0 <= n_train <= len(tasks):
        raise ValueError(f"n_train {n_train} must be within 0..{len(tasks)} (the number of tasks)")
    rng = random.Random(f"clawgym-split/{seed}")
    by_role: dict[str, list[str]] = {}
    for task in tasks:
        by_role.setdefault(task.persona.role, []).append(task.task_id)
    exact = {role: n_train * len(ids) / len(tasks) for role, ids in by_role.items()}
    quota = {role: int(x) for role, x in exact.items()}
    # Largest remainder, ties broken by the seeded shuffle, so the quotas sum to n_train exactly.
    order = sorted(by_role, key=lambda r: (-(exact[r] - quota[r]), rng.random()))
    for role in order[: n_train - sum(quota.values())]:
        quota[role] += 1
    train = {tid for role, ids in by_role.items() for tid in rng.sample(ids, quota[role])}
    ordered = [t.task_id for t in tasks]
    return Split(seed=seed, train=[i for i in ordered if i in train], heldout=[i for i in ordered if i not in train])


def split_bytes(split: Split) -> bytes:
    return (json.dumps(split.model_dump(), indent=2) + "\n").encode()


def load_split(path: str | Path) -> Split:
    path = Path(path)
    try:
        return Split.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read split {path}: {exc.strerror}") from exc


def check_split(split: Split, tasks: Sequence[Task], source: str) -> None:
    ids = {t.task_id for t in tasks}
    covered = set(split.train) | set(split.heldout)
    if covered != ids:
        missing, stale = sorted(ids - covered), sorted(covered - ids)
        raise ValueError(
            f"{source} does not match the tasks: not in the split {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"no such task {stale[:5]}{'...' if len(stale) > 5 else ''}; delete it to draw a new split"
        )


def write_corpus(out_dir: str | Path, tasks: Sequence[Task], n_train: int = DEFAULT_TRAIN, seed: int = 0) -> Split:
    """Write tasks.jsonl, and split.json unless a matching one is already there (then it is reused)."""
    out = Path(out_dir)
    split_path = out / SPLIT_FILE
    if split_path.exists():
        split = load_split(split_path)
        check_split(split, tasks, str(split_path))
    else:
        split = make_split(tasks, n_train, seed)
    atomic_write_bytes(out / TASKS_FILE, task_lines(tasks))
    if not split_path.exists():
        atomic_write_bytes(split_path, split_bytes(split))
    return split


def load_corpus(corpus_dir: str | Path) -> tuple[list[Task], Split]:
    """tasks.jsonl and split.json of a built corpus (`fieldkit gym build`), checked against each other."""
    corpus = Path(corpus_dir)
    if not (corpus / TASKS_FILE).exists():
        raise FileNotFoundError(f"no {TASKS_FILE} in {corpus}; build it with `fieldkit gym build --out {corpus}`")
    tasks = load_tasks(corpus / TASKS_FILE)
    split = load_split(corpus / SPLIT_FILE)
    check_split(split, tasks, str(corpus / SPLIT_FILE))
    return tasks, split
