"""The corpus on disk: tasks.jsonl and the frozen train/validation/test split.json.

Three splits, kept apart (ARCHITECTURE.md): train feeds rollouts, validation runs the gates and chooses the
checkpoint, test is only ever reported. Each is stratified by persona and seeded. Once split.json exists it is reused
as it is (a test set that moved between runs would make every comparison meaningless), and a split that no longer
matches the tasks is an error naming the ids, never silently redrawn. A two-way train/heldout split.json written
before validation existed is refused with its migration: `fieldkit gym migrate-split` keeps its train split and
divides its held-out tasks into validation and test, seeded and stratified as a new split would be.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import Field, model_validator

from fieldkit.gym.records import Record
from fieldkit.gym.task import Task
from fieldkit.gym.validate import load_tasks
from fieldkit.runs import atomic_write_bytes

TASKS_FILE = "tasks.jsonl"
SPLIT_FILE = "split.json"
DEFAULT_TRAIN = 42  # the reference: 42 training tasks of 200
DEFAULT_VALIDATION = 40  # five per persona for the gates; the other 118 of 200 are the reported test split


class Split(Record):
    seed: int
    train: list[str]
    validation: list[str]
    test: list[str]
    note: str = Field(
        "stratified by persona; frozen: reused as is once written; validation chooses, test is only reported",
        description="for readers",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> Split:
        named = {"train": set(self.train), "validation": set(self.validation), "test": set(self.test)}
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            both = named[a] & named[b]
            if both:
                raise ValueError(f"task ids in both {a} and {b}: {sorted(both)[:5]}")
        return self


class TwoWaySplitError(ValueError):
    """A split.json from before the validation split: train and heldout only."""


def task_lines(tasks: Sequence[Task]) -> bytes:
    """The canonical JSONL bytes of a task list (the generator's output is compared byte for byte)."""
    return "".join(t.model_dump_json(exclude_none=True) + "\n" for t in tasks).encode()


def stratified_pick(ids: Sequence[str], roles: Mapping[str, str], n: int, rng: random.Random) -> set[str]:
    """`n` of `ids`, each persona's share of them proportional to its share of `ids` (largest remainder, ties broken
    by the seeded generator, so the quotas sum to n exactly)."""
    if not 0 <= n <= len(ids):
        raise ValueError(f"cannot pick {n} of {len(ids)} tasks")
    by_role: dict[str, list[str]] = {}
    for task_id in ids:
        by_role.setdefault(roles[task_id], []).append(task_id)
    exact = {role: n * len(members) / len(ids) for role, members in by_role.items()}
    quota = {role: int(x) for role, x in exact.items()}
    order = sorted(by_role, key=lambda r: (-(exact[r] - quota[r]), rng.random()))
    for role in order[: n - sum(quota.values())]:
        quota[role] += 1
    return {task_id for role, members in by_role.items() for task_id in rng.sample(members, quota[role])}


def stratified_subset(ids: Sequence[str], roles: Mapping[str, str], limit: int | None, purpose: str) -> list[str]:
    """A fixed persona-stratified subset of `limit` ids (all of them when limit is None or not smaller), in their
    order. Fixed: a function of the ids and `purpose` only, so every run seed scores the same tasks."""
    if limit is None or limit >= len(ids):
        return list(ids)
    chosen = stratified_pick(ids, roles, limit, random.Random(f"clawgym-subset/{purpose}"))
    return [task_id for task_id in ids if task_id in chosen]


def make_split(
    tasks: Sequence[Task], n_train: int = DEFAULT_TRAIN, n_validation: int = DEFAULT_VALIDATION, seed: int = 0
) -> Split:
    """A seeded split: train drawn persona-stratified from all tasks, validation persona-stratified from the rest,
    test what is left."""
    if not 0 <= n_train <= len(tasks):
        raise ValueError(f"n_train {n_train} must be within 0..{len(tasks)} (the number of tasks)")
    if not 0 <= n_validation <= len(tasks) - n_train:
        raise ValueError(f"n_validation {n_validation} must be within 0..{len(tasks) - n_train} (tasks not in train)")
    rng = random.Random(f"clawgym-split/{seed}")
    roles = {t.task_id: t.persona.role for t in tasks}
    ordered = [t.task_id for t in tasks]
    train = stratified_pick(ordered, roles, n_train, rng)
    return _split_rest(seed, ordered, roles, train, n_validation, rng)


def _split_rest(
    seed: int, ordered: list[str], roles: Mapping[str, str], train: set[str], n_validation: int, rng: random.Random
) -> Split:
    rest = [i for i in ordered if i not in train]
    validation = stratified_pick(rest, roles, n_validation, rng)
    return Split(
        seed=seed,
        train=[i for i in ordered if i in train],
        validation=[i for i in rest if i in validation],
        test=[i for i in rest if i not in validation],
    )


def migrate_two_way(path: str | Path, tasks: Sequence[Task], n_validation: int = DEFAULT_VALIDATION) -> Split:
    """A three-way split from a two-way split.json: its train split kept, its held-out tasks divided into validation
    (persona-stratified) and test. The draw replays `make_split` with the split's seed, so a two-way split that the
    old `make_split` drew migrates to exactly the split a new build draws."""
    old = json.loads(Path(path).read_bytes())
    if "heldout" not in old:
        raise ValueError(f"{path} is not a two-way train/heldout split; nothing to migrate")
    train, heldout = set(old["train"]), set(old["heldout"])
    if n_validation > len(heldout):
        raise ValueError(f"n_validation {n_validation} must be within 0..{len(heldout)} (the held-out tasks)")
    rng = random.Random(f"clawgym-split/{old['seed']}")
    roles = {t.task_id: t.persona.role for t in tasks}
    ordered = [t.task_id for t in tasks]
    stratified_pick(ordered, roles, len(train), rng)  # the train draw, replayed for the generator's state only
    split = _split_rest(old["seed"], ordered, roles, train, n_validation, rng)
    check_split(split, tasks, str(path))
    return split


def split_bytes(split: Split) -> bytes:
    return (json.dumps(split.model_dump(), indent=2) + "\n").encode()


def load_split(path: str | Path) -> Split:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read split {path}: {exc.strerror}") from exc
    fields = json.loads(data)
    if isinstance(fields, dict) and "heldout" in fields and "validation" not in fields:
        raise TwoWaySplitError(
            f"{path} is a two-way train/heldout split from before the validation split; run `fieldkit gym "
            f"migrate-split --corpus {path.parent}` to keep its train split and divide its held-out tasks into "
            "validation and test (or delete it to draw a new split)"
        )
    return Split.model_validate_json(data)


def check_split(split: Split, tasks: Sequence[Task], source: str) -> None:
    ids = {t.task_id for t in tasks}
    covered = set(split.train) | set(split.validation) | set(split.test)
    if covered != ids:
        missing, stale = sorted(ids - covered), sorted(covered - ids)
        raise ValueError(
            f"{source} does not match the tasks: not in the split {_few(missing)}, no such task {_few(stale)}; "
            "delete it to draw a new split"
        )


def _few(ids: Iterable[str]) -> str:
    shown = list(ids)
    return f"{shown[:5]}{'...' if len(shown) > 5 else ''}"


def write_corpus(
    out_dir: str | Path,
    tasks: Sequence[Task],
    n_train: int = DEFAULT_TRAIN,
    n_validation: int = DEFAULT_VALIDATION,
    seed: int = 0,
) -> Split:
    """Write tasks.jsonl, and split.json unless a matching one is already there (then it is reused)."""
    out = Path(out_dir)
    split_path = out / SPLIT_FILE
    if split_path.exists():
        split = load_split(split_path)
        check_split(split, tasks, str(split_path))
    else:
        split = make_split(tasks, n_train, n_validation, seed)
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
