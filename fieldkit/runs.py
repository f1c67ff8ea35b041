"""The run directory: where a training run writes everything before it uses it, so it can resume.

Layout under runs/<run_name>/:
    config.yaml                    the RunConfig the run started with
    steps/<step>/episodes.jsonl    the step's graded episodes, written before advantages are computed
    steps/<step>/metrics.json      the step's metrics, written after the learner step
    gates/<step>/episodes.jsonl    validation gate episodes
    checkpoints/<step>/            adapter + learner state; `state.json` inside is written last
    adapters/<run>-v<version>/     each published adapter version (the learner writes them; retention prunes them)
    latest.json                    the newest complete checkpoint (written after it is complete)
    best/                          the adapter chosen on validation score only
    test/<policy>/episodes.jsonl   the demo's test-split episodes of base, SFT and the chosen RL adapter
    report/                        the test-split report (`fieldkit eval`), and the demo's summary.json

Every file is written to a temporary name, flushed and renamed, so a reader never sees half a file; a disk that is
nearly full stops the run with a clear message before anything is half-written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fieldkit.gym.records import Episode
from fieldkit.storage import Storage

MIN_FREE_BYTES = 64 << 20  # refuse to start a write with less free space than this


class DiskFullError(RuntimeError):
    """The run directory's disk is (nearly) full; the run stopped cleanly before writing."""


def ensure_free_space(path: Path, needed_bytes: int = 0, minimum: int = MIN_FREE_BYTES) -> None:
    free = shutil.disk_usage(path).free
    if free < needed_bytes + minimum:
        raise DiskFullError(
            f"only {free / 2**20:.1f} MiB free under {path}; need {(needed_bytes + minimum) / 2**20:.1f} MiB. "
            "Free space and resume with --resume: nothing was half-written."
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_free_space(path.parent, len(data))
    # unique per writer: two threads of one process (a Ray actor, a pytest run) may write the same file at once
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_jsonl(path: Path, records: Iterable[BaseModel]) -> None:
    atomic_write_bytes(path, "".join(r.model_dump_json() + "\n" for r in records).encode())


def read_episodes(path: Path) -> list[Episode]:
    with open(path) as handle:
        return [Episode.model_validate_json(line) for line in handle if line.strip()]


def step_name(step: int) -> str:
    return f"{step:06d}"


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def step_episodes(self, step: int) -> Path:
        return self.root / "steps" / step_name(step) / "episodes.jsonl"

    def step_metrics(self, step: int) -> Path:
        return self.root / "steps" / step_name(step) / "metrics.json"

    def gate_episodes(self, step: int) -> Path:
        return self.root / "gates" / step_name(step) / "episodes.jsonl"

    def test_episodes(self, policy: str) -> Path:
        return self.root / "test" / policy / "episodes.jsonl"

    def checkpoint(self, step: int) -> Path:
        return self.root / "checkpoints" / step_name(step)

    @property
    def latest(self) -> Path:
        return self.root / "latest.json"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Every complete checkpoint (state.json written, which is written last), newest first."""
        root = self.root / "checkpoints"
        found = [(int(path.name), path) for path in root.glob("[0-9]" * 6) if (path / "state.json").exists()]
        return sorted(found, reverse=True)


class RunStore:
    """A run's artifacts in run storage (fieldkit.storage), which every node reads:
        <run>/adapters/<run>-v<version>/   each published adapter version (the learner uploads them)
        <run>/checkpoints/<step>/          learner/ (uploaded by the learner), then state.json (by the driver, last)
        <run>/latest.json                  the newest complete checkpoint
        <run>/best/                        the adapter chosen on validation score, with its adapter_ref.json
        <run>/config.yaml                  the RunConfig the run started with (what `fieldkit serve` serves it on)
    With the default storage (the runs directory) these are the run directory's own paths."""

    def __init__(self, storage: Storage, run_name: str) -> None:
        self.storage = storage
        self.run = run_name

    def adapter(self, name: str) -> str:
        return f"{self.run}/adapters/{name}"

    def checkpoint(self, step: int) -> str:
        return f"{self.run}/checkpoints/{step_name(step)}"

    @property
    def latest(self) -> str:
        return f"{self.run}/latest.json"

    @property
    def best(self) -> str:
        return f"{self.run}/best"

    @property
    def config(self) -> str:
        return f"{self.run}/config.yaml"

    def checkpoints(self) -> list[tuple[int, str]]:
        """Every complete checkpoint (state.json written, which is written last), newest first."""
        names = self.storage.children(f"{self.run}/checkpoints", marker="state.json")
        return sorted(((int(n), self.checkpoint(int(n))) for n in names if n.isdigit()), reverse=True)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """The checkpoint latest.json names (a crash mid-save leaves the one before)."""
        if not self.storage.exists(self.latest):
            return None
        step = self.storage.read_json(self.latest)["step"]
        key = self.checkpoint(step)
        if not self.storage.exists(f"{key}/state.json"):
            raise FileNotFoundError(
                f"{self.storage.uri(self.latest)} points at step {step} but {key}/state.json is missing"
            )
        return step, key

    def mark_latest(self, step: int) -> None:
        self.storage.write_json(self.latest, {"step": step, "key": self.checkpoint(step)})

    def retired(self, keep_last: int, keep_step: int | None) -> tuple[list[str], list[str]]:
        """What retention lets go: (the checkpoints beyond the `keep_last` newest, except step `keep_step`'s; the
        adapter versions those served and no kept checkpoint serves). An adapter no checkpoint names yet (just
        published) is never let go."""
        checkpoints = self.checkpoints()
        kept = {key for i, (step, key) in enumerate(checkpoints) if i < keep_last or step == keep_step}
        served: dict[str, set[str]] = {key: set() for _, key in checkpoints}
        for key in served:
            adapter = self.storage.read_json(f"{key}/state.json")["adapter"]
            if adapter is not None:
                served[key].add(adapter["name"])
        keep = set().union(*(served[key] for key in kept))
        let_go = set().union(*(served[key] for key in served if key not in kept)) - keep
        return [key for _, key in checkpoints if key not in kept], [self.adapter(name) for name in sorted(let_go)]


def sample_tasks(train_ids: Sequence[str], seed: int, step: int, n: int) -> list[str]:
    """The tasks of a step: a pure function of (seed, step), so a resumed run samples exactly what it would have."""
    if not train_ids:
        raise ValueError("the training split is empty")
    rng = random.Random(f"{seed}:{step}")
    ordered = sorted(train_ids)
    if n <= len(ordered):
        return rng.sample(ordered, n)
    return [rng.choice(ordered) for _ in range(n)]
