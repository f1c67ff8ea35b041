"""Lineage store cost: SQLite appends (WAL, one transaction each) against the reference's flock + csv TSV append,
and rendering the card against plainly reading the trials back. Ratios are against baselines measured in this run."""

from __future__ import annotations

import csv
import fcntl
import tempfile
import time
from pathlib import Path

from fieldkit.lineage import TSV_COLUMNS, LineageStore, Trial

N_TRIALS = 500


def trial(i: int) -> Trial:
    return Trial(
        run_id="bench",
        trial_id=f"bench/{i:04d}",
        parent_id=f"bench/{i - 1:04d}" if i else None,
        kind="rl-step" if i % 10 else "validation-gate",
        status="keep" if i % 3 else "discard",
        step=i,
        metric=(i % 17) / 17,
        metric_name="validation.reward" if i % 10 == 0 else "train.reward",
        metrics={"kl": 0.01 * i, "tokens": 1000 + i},
        hypothesis=f"step {i}: lr 1e-5, group 4",
        wall={"rollout_s": 12.0, "train_s": 3.0},
        notes="bench",
    )


def tsv_append(path: Path, row: list[str]) -> None:
    """What the reference does per trial: open, lock, append one row, unlock."""
    with path.open("a", newline="") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            csv.writer(handle, delimiter="\t", lineterminator="\n").writerow(row)
            handle.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def main() -> dict[str, float]:
    trials = [trial(i) for i in range(N_TRIALS)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tsv = root / "results.tsv"
        tsv_append(tsv, list(TSV_COLUMNS))
        start = time.perf_counter()
        for t in trials:
            tsv_append(tsv, [t.trial_id, "", "", t.parent_id or "", "", "", t.hypothesis, "", t.status, str(t.metric)])
        tsv_s = time.perf_counter() - start

        store = LineageStore(root / "lineage.db")
        start = time.perf_counter()
        for t in trials:
            store.record_trial(t)
        sqlite_s = time.perf_counter() - start

        start = time.perf_counter()
        store.trials("bench")
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        store.card("bench")
        card_s = time.perf_counter() - start
        start = time.perf_counter()
        store.best("bench")
        best_s = time.perf_counter() - start

    figures = {
        "trials": float(N_TRIALS),
        "tsv_append_ms": 1000 * tsv_s / N_TRIALS,
        "sqlite_append_ms": 1000 * sqlite_s / N_TRIALS,
        "sqlite_vs_tsv_append": sqlite_s / tsv_s,
        "read_all_ms": 1000 * read_s,
        "card_ms": 1000 * card_s,
        "card_vs_read": card_s / read_s,
        "best_vs_read": best_s / read_s,
    }
    rows = [
        ("TSV append (reference)", figures["tsv_append_ms"], 1.0, "itself"),
        ("SQLite append", figures["sqlite_append_ms"], figures["sqlite_vs_tsv_append"], "TSV append"),
        ("read all trials", figures["read_all_ms"], 1.0, "itself"),
        ("render card", figures["card_ms"], figures["card_vs_read"], "read all"),
        ("best (validation rule)", 1000 * best_s, figures["best_vs_read"], "read all"),
    ]
    print(f"lineage store, {N_TRIALS} trials")
    print(f"{'measure':<26}{'ms':>10}{'ratio':>8}  baseline")
    for name, ms, ratio, baseline in rows:
        print(f"{name:<26}{ms:>10.3f}{ratio:>8.2f}  {baseline}")
    return figures


if __name__ == "__main__":
    main()
