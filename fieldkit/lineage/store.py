"""The SQLite lineage store (the embedded default: runs/lineage.db).

Append-only and safe under concurrent writers: WAL journal, a generous busy timeout, and every write inside
`BEGIN IMMEDIATE`, which takes the database's write lock before reading anything, so two processes appending at once
are serialised by SQLite and neither loses a row. A connection is opened per operation, so a store object may be
shared by threads or carried across a fork.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fieldkit.lineage.card import CardSizes, render_card
from fieldkit.lineage.queries import LineageError, best_of, chain_to, ranked
from fieldkit.lineage.records import Direction, Trial

DEFAULT_DB = Path("runs/lineage.db")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

JSON_COLUMNS = ("metrics", "config", "seeds", "packages", "wall", "artifacts", "labels")
TEXT_COLUMNS = (
    "trial_id",
    "run_id",
    "parent_id",
    "baseline_id",
    "kind",
    "status",
    "step",
    "hypothesis",
    "metric_name",
    "metric",
    "direction",
    "config_hash",
    "code_version",
    "notes",
    "created_at",
)
COLUMNS = TEXT_COLUMNS + JSON_COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    parent_id TEXT REFERENCES trials(trial_id),
    baseline_id TEXT REFERENCES trials(trial_id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    step INTEGER,
    hypothesis TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    metric REAL,
    direction TEXT NOT NULL CHECK (direction IN ('max', 'min')),
    config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL,
    notes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    metrics TEXT NOT NULL,
    config TEXT NOT NULL,
    seeds TEXT NOT NULL,
    packages TEXT NOT NULL,
    wall TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    labels TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials (run_id, seq);
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a new store to WAL. SQLite answers "database is locked" at once, without its busy timeout, when
    another process is creating the same store at that moment (two drivers starting together): wait and retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class LineageStore:
    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = Path(path)
        self._schema_ready = False

    @contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if not self.path.exists():
            if not create:
                raise LineageError(f"no lineage store at {self.path} (nothing has been recorded there yet)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._schema_ready:
                self._prepare(conn)
            yield conn
        except sqlite3.DatabaseError as exc:
            raise LineageError(f"{self.path}: {exc} (is this a fieldkit lineage store?)") from exc
        finally:
            conn.close()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LineageError(f"{self.path} has lineage schema {version}; this fieldkit reads up to {SCHEMA_VERSION}")
        if version < SCHEMA_VERSION:
            _enable_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:  # not made meanwhile
                    for statement in filter(str.strip, SCHEMA.split(";")):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._schema_ready = True

    # --- writes -------------------------------------------------------------------------------------------------

    def record_trial(self, trial: Trial) -> Trial:
        """Append one trial; returns it with `seq`, `created_at` and (when empty) `trial_id` filled in."""
        return self.record_trials([trial])[0]

    def record_trials(self, trials: Sequence[Trial]) -> list[Trial]:
        """Append trials in one transaction: all of them are stored, or (on any error) none."""
        stored: list[Trial] = []
        with self._connect(create=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for trial in trials:
                    stored.append(self._insert(conn, trial))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stored

    def _insert(self, conn: sqlite3.Connection, trial: Trial) -> Trial:
        trial = trial.model_copy(
            update={
                "trial_id": trial.trial_id or _next_id(conn, trial.run_id),
                "created_at": trial.created_at or utc_now(),
            }
        )
        for role, ref in (("parent", trial.parent_id), ("baseline", trial.baseline_id)):
            if ref is not None and ref != trial.trial_id and not _exists(conn, ref):
                raise LineageError(
                    f"trial {trial.trial_id!r}: {role} {ref!r} is not in the store "
                    "(a trial's parent and baseline must be recorded before it)"
                )
        if _exists(conn, trial.trial_id):
            raise LineageError(f"trial {trial.trial_id!r} is already in the store; trial ids are unique")
        values = [getattr(trial, c) for c in TEXT_COLUMNS]
        values += [json.dumps(getattr(trial, c), sort_keys=True) for c in JSON_COLUMNS]
        placeholders = ", ".join("?" for _ in COLUMNS)
        cursor = conn.execute(f"INSERT INTO trials ({', '.join(COLUMNS)}) VALUES ({placeholders})", values)
        assert cursor.lastrowid is not None
        return trial.model_copy(update={"seq": cursor.lastrowid})

    # --- reads --------------------------------------------------------------------------------------------------

    def trials(self, run_id: str | None = None) -> list[Trial]:
        """Every trial (of one run), oldest first."""
        with self._connect(create=False) as conn:
            if run_id is None:
                rows = conn.execute("SELECT * FROM trials ORDER BY seq").fetchall()
            else:
                rows = conn.execute("SELECT * FROM trials WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [_from_row(row) for row in rows]

    def runs(self) -> list[str]:
        """Run ids in the order their first trial was recorded."""
        with self._connect(create=False) as conn:
            rows = conn.execute("SELECT run_id FROM trials GROUP BY run_id ORDER BY MIN(seq)").fetchall()
        return [row[0] for row in rows]

    def has(self, trial_id: str) -> bool:
        with self._connect(create=True) as conn:
            return _exists(conn, trial_id)

    def get(self, trial_id: str) -> Trial:
        with self._connect(create=False) as conn:
            row = conn.execute("SELECT * FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        if row is None:
            raise LineageError(f"no trial {trial_id!r} in {self.path}")
        return _from_row(row)

    def latest(self, n: int = 10, run_id: str | None = None) -> list[Trial]:
        """The n most recent trials, oldest of them first."""
        return self._trials_of(run_id)[-n:] if n > 0 else []

    def best(
        self, run_id: str | None = None, metric: str | None = None, direction: Direction | None = None
    ) -> Trial | None:
        """The best completed trial by the core metric (or `metrics[metric]`). In an RL run (one with rl-step or
        validation-gate trials) only validation gates compete: a training-pool score never selects a checkpoint."""
        return best_of(self._trials_of(run_id), metric, direction)

    def top_kept(self, k: int = 10, run_id: str | None = None, metric: str | None = None) -> list[Trial]:
        return [t for t in ranked(self._trials_of(run_id), metric) if t.status == "keep"][:k]

    def chain(self, trial_id: str) -> list[Trial]:
        """Root first, down to `trial_id`; the chain may cross runs (an RL run continuing an SFT trial)."""
        return chain_to({t.trial_id: t for t in self.trials()}, trial_id)

    def card(self, run_id: str | None = None, sizes: CardSizes | None = None) -> str:
        """The Markdown lineage card; the same database state gives the same text, byte for byte."""
        everything = self.trials()
        if run_id is not None and not any(t.run_id == run_id for t in everything):
            raise LineageError(f"no trials of run {run_id!r} in {self.path}")
        return render_card(everything, run_id, sizes or CardSizes())

    def _trials_of(self, run_id: str | None) -> list[Trial]:
        found = self.trials(run_id)
        if run_id is not None and not found:
            raise LineageError(f"no trials of run {run_id!r} in {self.path}")
        return found


def _exists(conn: sqlite3.Connection, trial_id: str) -> bool:
    return conn.execute("SELECT 1 FROM trials WHERE trial_id = ?", (trial_id,)).fetchone() is not None


def _next_id(conn: sqlite3.Connection, run_id: str) -> str:
    """'<run>/0001', '<run>/0002', ... Called inside the write transaction, so concurrent writers never collide."""
    n = conn.execute("SELECT COUNT(*) FROM trials WHERE run_id = ?", (run_id,)).fetchone()[0] + 1
    while _exists(conn, f"{run_id}/{n:04d}"):
        n += 1
    return f"{run_id}/{n:04d}"


def _from_row(row: sqlite3.Row) -> Trial:
    data = {c: row[c] for c in TEXT_COLUMNS}
    data.update({c: json.loads(row[c]) for c in JSON_COLUMNS})
    return Trial.model_validate({**data, "seq": row["seq"]})
