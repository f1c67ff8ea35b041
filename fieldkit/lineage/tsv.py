"""The reference's 17-column results.tsv (the lineage ablation's release format), read into and written from trials.

Tab-separated, one header line, one row per trial in append order, cells quoted the `csv` module's way when they
hold a tab, newline or quote. The columns, in order, and where each lands in a Trial:

| # | column          | Trial field                      | notes                                               |
|---|-----------------|----------------------------------|-----------------------------------------------------|
| 1 | exp_id          | trial_id = "<run>/<exp_id>"      | also labels["exp_id"]; ids are unique per run there |
| 2 | timestamp       | created_at                       | kept verbatim                                       |
| 3 | specialist      | labels["specialist"]             | the agent that proposed the trial                   |
| 4 | parent_exp      | parent_id = "<run>/<parent_exp>" | empty or equal to exp_id: no parent                 |
| 5 | baseline_exp    | baseline_id                      | same id rule as parent_exp                          |
| 6 | domain          | labels["domain"]                 | edit category                                       |
| 7 | hypothesis      | hypothesis                       |                                                     |
| 8 | expected_delta  | labels["expected_delta"]         | the proposer's prediction, free text                |
| 9 | status          | status                           | the shared vocabulary; anything else is refused     |
| 10| core_metric     | metric (metric_name, direction)  | name and direction come from the importer's caller  |
| 11| val_bpb         | metrics["val_bpb"]               |                                                     |
| 12| delta_vs_best   | metrics["delta_vs_best"]         |                                                     |
| 13| train_s         | wall["train_s"]                  |                                                     |
| 14| total_s         | wall["total_s"]                  |                                                     |
| 15| job_name        | labels["job_name"]               |                                                     |
| 16| snapshot_path   | artifacts["snapshot"]            |                                                     |
| 17| notes           | notes                            |                                                     |

`kind` is not a column: status baseline imports as kind "baseline", harness_abort and preflight_crash as "aborted"
(the trial never produced a measurement), everything else as "eval". Numeric cells that are empty, "nan" or "inf"
mean "not measured". Export writes the same columns back, so import -> export is the identity on canonical files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from fieldkit.lineage.queries import LineageError
from fieldkit.lineage.records import STATUSES, Direction, Trial, TrialKind
from fieldkit.runs import atomic_write_bytes

TSV_COLUMNS = (
    "exp_id",
    "timestamp",
    "specialist",
    "parent_exp",
    "baseline_exp",
    "domain",
    "hypothesis",
    "expected_delta",
    "status",
    "core_metric",
    "val_bpb",
    "delta_vs_best",
    "train_s",
    "total_s",
    "job_name",
    "snapshot_path",
    "notes",
)
LABEL_COLUMNS = ("specialist", "domain", "expected_delta", "job_name")
METRIC_COLUMNS = ("val_bpb", "delta_vs_best")
WALL_COLUMNS = ("train_s", "total_s")


def read_tsv(path: Path, run_id: str, metric_name: str = "core_metric", direction: Direction = "min") -> list[Trial]:
    """Parse a results.tsv into trials of `run_id` (not yet stored). Errors name the file, line, column and value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LineageError(f"{path}: cannot read: {exc}") from exc
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    if not rows:
        raise LineageError(f"{path}: empty file; expected a header of {len(TSV_COLUMNS)} columns")
    header = rows[0]
    missing = [c for c in TSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in TSV_COLUMNS]
    if missing or unknown or len(header) != len(TSV_COLUMNS):
        raise LineageError(
            f"{path}: line 1: header must hold the {len(TSV_COLUMNS)} columns {', '.join(TSV_COLUMNS)}; "
            f"missing: {', '.join(missing) or 'none'}; unknown or repeated: {', '.join(unknown) or 'none'}"
        )
    trials: list[Trial] = []
    first_line: dict[str, int] = {}
    last_line = 1  # a row's cells may hold quoted newlines, so rows and file lines drift apart
    for cells in rows[1:]:
        line = last_line + 1
        last_line = line + sum(cell.count("\n") for cell in cells)
        if not any(cells):
            continue
        if len(cells) != len(header):
            raise LineageError(f"{path}: line {line}: {len(cells)} cells, expected {len(header)}")
        row = dict(zip(header, cells, strict=True))
        exp_id = row["exp_id"]
        if not exp_id:
            raise LineageError(f"{path}: line {line}: exp_id is empty")
        if exp_id in first_line:
            raise LineageError(f"{path}: line {line}: exp_id {exp_id!r} repeats line {first_line[exp_id]}")
        first_line[exp_id] = line
        trials.append(_trial(row, run_id, metric_name, direction, where=f"{path}: line {line}"))
    return trials


def _trial(row: dict[str, str], run_id: str, metric_name: str, direction: Direction, where: str) -> Trial:
    status = row["status"]
    if status not in STATUSES:
        raise LineageError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
    numbers = {c: _number(row[c], c, where) for c in ("core_metric", *METRIC_COLUMNS, *WALL_COLUMNS)}
    exp_id = row["exp_id"]
    try:
        return Trial(
            trial_id=f"{run_id}/{exp_id}",
            run_id=run_id,
            parent_id=_ref(run_id, row["parent_exp"], exp_id, allow_self=False),
            baseline_id=_ref(run_id, row["baseline_exp"], exp_id, allow_self=True),
            kind=_kind(status),
            status=status,  # type: ignore[arg-type]  # checked against STATUSES above
            hypothesis=row["hypothesis"],
            metric_name=metric_name,
            metric=numbers["core_metric"],
            direction=direction,
            metrics={c: numbers[c] for c in METRIC_COLUMNS if numbers[c] is not None},
            wall={c: v for c in WALL_COLUMNS if (v := numbers[c]) is not None},
            artifacts={"snapshot": row["snapshot_path"]} if row["snapshot_path"] else {},
            labels={"exp_id": exp_id} | {c: row[c] for c in LABEL_COLUMNS if row[c]},
            notes=row["notes"],
            created_at=row["timestamp"],
        )
    except ValueError as exc:
        raise LineageError(f"{where}: {exc}") from exc


def _number(cell: str, column: str, where: str) -> float | None:
    if not cell.strip():
        return None
    try:
        value = float(cell)
    except ValueError as exc:
        raise LineageError(f"{where}: column {column} = {cell!r} is not a number") from exc
    return value if math.isfinite(value) else None


def _ref(run_id: str, ref: str, exp_id: str, allow_self: bool) -> str | None:
    if not ref or (ref == exp_id and not allow_self):
        return None
    return f"{run_id}/{ref}"


def _kind(status: str) -> TrialKind:
    if status == "baseline":
        return "baseline"
    if status in ("harness_abort", "preflight_crash"):
        return "aborted"
    return "eval"


def write_tsv(trials: Sequence[Trial], path: Path) -> None:
    """Write trials (oldest first) in the 17-column format; ids go back to the TSV's own exp_id where imported."""
    exp_ids = {t.trial_id: t.labels.get("exp_id", t.trial_id) for t in trials}
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    for t in trials:
        cells = {
            "exp_id": exp_ids[t.trial_id],
            "timestamp": t.created_at,
            "parent_exp": exp_ids.get(t.parent_id, t.parent_id) if t.parent_id else "",
            "baseline_exp": exp_ids.get(t.baseline_id, t.baseline_id) if t.baseline_id else "",
            "hypothesis": t.hypothesis,
            "status": t.status,
            "core_metric": _cell(t.metric),
            "snapshot_path": t.artifacts.get("snapshot", ""),
            "notes": t.notes,
        }
        cells |= {c: t.labels.get(c, "") for c in LABEL_COLUMNS}
        cells |= {c: _cell(_as_float(t.metrics.get(c))) for c in METRIC_COLUMNS}
        cells |= {c: _cell(t.wall.get(c)) for c in WALL_COLUMNS}
        writer.writerow([cells[c] for c in TSV_COLUMNS])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def _as_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)
