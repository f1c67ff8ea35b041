"""Import of the reference's 17-column results.tsv into the store, export back, and the errors on bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldkit.lineage import TSV_COLUMNS, LineageError, LineageStore, read_tsv, write_tsv

# Six trials as the reference writes them; cells separated by " | " here for reading, a tab in the file.
# Row 003's hypothesis holds a tab and its notes a newline and quotes, so the file quotes them.
ROWS = [
    line.split(" | ")
    for line in [
        "000 | 2026-04-01T10:00:00Z |  |  | 000 | seed | multi-596 seed stack |  | baseline | 1.0801 | 1.0801 | 0.0"
        " | 590.5 | 1190.25 | apg-seed-0000 | snapshots/000 | seed row",
        "001 | 2026-04-01T10:30:00Z | arch | 000 | 000 | arch | wider MLP (4x -> 5x) | -0.002 | keep | 1.0762 | 1.0762"
        " | -0.0039 | 598.0 | 1201.0 | apg-arch-0001 | snapshots/001 | ",
        "002 | 2026-04-01T11:00:00Z | opt | 001 | 001 | opt | Muon lr 0.05 | -0.001 | discard | 1.0779 | 1.0779"
        " | 0.0017 | 597.25 | 1199.0 | apg-opt-0002 |  | no gain",
        "003 | 2026-04-01T11:30:00Z | reg | 001 | 001 | reg | dropout 0.1\tin attention |  | crash |  |  |  | 12.5"
        ' | 40.0 | apg-reg-0003 |  | Traceback:\n  train_gpt.py:412 "shape"',
        "004 | 2026-04-01T12:00:00Z | tok | 001 | 001 | tok | larger vocab | -0.004 | eval_budget_overrun | 1.07 | 1.07"
        " |  | 599.0 | 1800.0 | apg-tok-0004 |  | eval 612 s > 600 s",
        "005 | 2026-04-01T12:30:00Z | arch | 001 | 001 | arch | depth 12 -> 13 | -0.001 | keep | 1.0751 | 1.0751"
        " | -0.0011 | 599.5 | 1210.0 | apg-arch-0005 | snapshots/005 | ",
    ]
]


def tsv_text(rows: list[list[str]], header: tuple[str, ...] = TSV_COLUMNS) -> str:
    """Written the way the reference writes it: csv's tab dialect, quoting only cells that need it."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.fixture
def results_tsv(tmp_path: Path) -> Path:
    path = tmp_path / "results.tsv"
    path.write_text(tsv_text(ROWS))
    return path


def test_import_maps_every_column(results_tsv: Path, tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trials(read_tsv(results_tsv, run_id="pg"))
    trials = {t.labels["exp_id"]: t for t in store.trials("pg")}
    assert list(trials) == ["000", "001", "002", "003", "004", "005"]
    seed, crash = trials["000"], trials["003"]
    assert (seed.trial_id, seed.kind, seed.status, seed.parent_id, seed.baseline_id) == (
        "pg/000",
        "baseline",
        "baseline",
        None,
        "pg/000",
    )
    assert seed.metric == 1.0801 and seed.direction == "min" and seed.metric_name == "core_metric"
    assert seed.wall == {"train_s": 590.5, "total_s": 1190.25}
    assert seed.artifacts == {"snapshot": "snapshots/000"}
    assert seed.created_at == "2026-04-01T10:00:00Z"
    assert trials["001"].labels == {
        "exp_id": "001",
        "specialist": "arch",
        "domain": "arch",
        "expected_delta": "-0.002",
        "job_name": "apg-arch-0001",
    }
    assert trials["001"].metrics == {"val_bpb": 1.0762, "delta_vs_best": -0.0039}
    assert crash.kind == "eval" and crash.metric is None and crash.parent_id == "pg/001"
    assert crash.hypothesis == "dropout 0.1\tin attention"
    assert crash.notes == 'Traceback:\n  train_gpt.py:412 "shape"'


def test_imported_run_answers_best_and_chain(results_tsv: Path, tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trials(read_tsv(results_tsv, run_id="pg"))
    best = store.best("pg")
    # 004 has the lowest metric but overran its eval budget: a failure class never wins.
    assert best is not None and best.trial_id == "pg/005"
    assert [t.trial_id for t in store.chain(best.trial_id)] == ["pg/000", "pg/001", "pg/005"]
    card = store.card("pg")
    assert "eval_budget_overrun 1" in card and "- core_metric: 1.075100 (lower is better)" in card


def test_export_reproduces_the_file_byte_for_byte(results_tsv: Path, tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trials(read_tsv(results_tsv, run_id="pg"))
    out = tmp_path / "out" / "results.tsv"
    write_tsv(store.trials("pg"), out)
    assert out.read_bytes() == results_tsv.read_bytes()


def replace_cell(rows: list[list[str]], exp_id: str, column: str, value: str) -> list[list[str]]:
    at = TSV_COLUMNS.index(column)
    return [[*r[:at], value, *r[at + 1 :]] if r[0] == exp_id else r for r in rows]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (replace_cell(ROWS, "002", "core_metric", "not-a-number"), "line 4: column core_metric = 'not-a-number'"),
        (replace_cell(ROWS, "001", "status", "kept"), "line 3: status 'kept' is not one of keep, discard"),
        (replace_cell(ROWS, "002", "exp_id", ""), "line 4: exp_id is empty"),
        ([*ROWS, ROWS[1]], "line 9: exp_id '001' repeats line 3"),  # row 003 spans lines 5-6 (a quoted newline)
        ([r[:16] if r[0] == "005" else r for r in ROWS], "line 8: 16 cells, expected 17"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, rows: list[list[str]], message: str) -> None:
    path = tmp_path / "results.tsv"
    path.write_text(tsv_text(rows))
    with pytest.raises(LineageError, match=message):
        read_tsv(path, run_id="pg")


def test_bad_header_names_missing_and_unknown_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.tsv"
    header = tuple("score" if c == "core_metric" else c for c in TSV_COLUMNS)
    path.write_text(tsv_text(ROWS, header))
    with pytest.raises(LineageError, match="missing: core_metric; unknown or repeated: score"):
        read_tsv(path, run_id="pg")


def test_a_parent_after_its_child_refuses_the_whole_import(tmp_path: Path) -> None:
    path = tmp_path / "results.tsv"
    path.write_text(tsv_text([ROWS[0], ROWS[2], ROWS[1]]))  # 002 names 001 as parent before 001 exists
    store = LineageStore(tmp_path / "lineage.db")
    with pytest.raises(LineageError, match="trial 'pg/002': parent 'pg/001' is not in the store"):
        store.record_trials(read_tsv(path, run_id="pg"))
    assert store.trials() == []
