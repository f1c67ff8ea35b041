"""The lineage store on real SQLite: records, best on validation only, the chain, the card's determinism, errors."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fieldkit.config import RunConfig
from fieldkit.lineage import CardSizes, LineageError, LineageStore, Trial, capture_provenance


def rl_run(store: LineageStore, run: str = "grpo") -> None:
    """A small RL run shaped like the reference's lesson: training-pool scores climb while validation peaks early.

    baseline gate (0.02) -> step 1..6; gates after steps 2, 4, 6 score 0.08, 0.05, 0.06 on validation. Step 6 scores
    0.875 on the training pool, the highest of any trial, and must never be chosen.
    """
    parent = store.record_trial(
        Trial(
            run_id=run,
            trial_id=f"{run}/gate-0000",
            kind="validation-gate",
            status="baseline",
            step=0,
            metric_name="validation.task_pass",
            metric=0.02,
            hypothesis="base model on the validation split",
        )
    ).trial_id
    validation = {2: 0.08, 4: 0.05, 6: 0.06}
    for step in range(1, 7):
        parent = store.record_trial(
            Trial(
                run_id=run,
                trial_id=f"{run}/step-{step:04d}",
                parent_id=parent,
                kind="rl-step",
                status="keep",
                step=step,
                metric_name="train.task_pass",
                metric=0.5 + step / 16,
                hypothesis=f"GRPO step {step}",
            )
        ).trial_id
        if step in validation:
            store.record_trial(
                Trial(
                    run_id=run,
                    trial_id=f"{run}/gate-{step:04d}",
                    parent_id=parent,
                    baseline_id=f"{run}/gate-0000",
                    kind="validation-gate",
                    status="keep" if step == 2 else "discard",
                    step=step,
                    metric_name="validation.task_pass",
                    metric=validation[step],
                    metrics={"validation.per_assertion": 0.3 + step / 100, "validation.mean_turns": 5.0 - step / 10},
                    hypothesis=f"validation gate after step {step}",
                    notes=f"gate {step}: adapter v{step}",
                    artifacts={"adapter": f"runs/{run}/adapters/v{step}"},
                )
            )


def test_record_assigns_seq_time_and_ids(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    first = store.record_trial(Trial(run_id="sft", kind="sft", status="keep", metric=0.4))
    second = store.record_trial(Trial(run_id="sft", kind="eval", status="discard", parent_id=first.trial_id))
    assert (first.trial_id, second.trial_id) == ("sft/0001", "sft/0002")
    assert second.seq > first.seq
    assert first.created_at.endswith("Z")
    assert store.get("sft/0001") == first
    assert store.trials("sft") == [first, second]


def test_all_fields_round_trip(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    cfg = RunConfig(run_name="full")
    prov = capture_provenance()
    trial = Trial(
        run_id="full",
        trial_id="full/step-0001",
        kind="rl-step",
        status="keep",
        step=1,
        hypothesis="lr 1e-5 keeps KL under 0.1",
        metric_name="train.reward",
        metric=0.25,
        direction="max",
        metrics={"kl": 0.01, "tokens": 1234, "algorithm": "grpo", "saturated": False, "missing": None},
        config=cfg.model_dump(mode="json"),
        code_version=prov.code_version,
        seeds={"run": 0, "sampling": 7},
        packages=prov.packages,
        wall={"rollout_s": 12.5, "train_s": 3.25},
        artifacts={"adapter": "runs/full/adapters/v1"},
        labels={"note": "tab-free"},
        notes="first step\nsecond line",
        created_at="2026-01-02T03:04:05.000Z",
    )
    stored = store.record_trial(trial)
    assert stored.config_hash == cfg.config_hash()  # the same hash RunConfig reports
    assert store.get("full/step-0001") == stored
    assert stored.model_dump(exclude={"seq"}) == trial.model_dump(exclude={"seq"})
    assert "numpy" in stored.packages


def test_best_uses_validation_gates_only_in_rl_runs(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    rl_run(store)
    best = store.best("grpo")
    assert best is not None and best.trial_id == "grpo/gate-0002"
    # A named metric from the metrics JSON, with its own direction: fewest turns is gate 6.
    by_turns = store.best("grpo", metric="validation.mean_turns", direction="min")
    assert by_turns is not None and by_turns.trial_id == "grpo/gate-0006"
    assert [t.trial_id for t in store.top_kept(5, "grpo")] == ["grpo/gate-0002"]


def test_gates_recorded_before_the_validation_split_read_back_as_validation_gates(tmp_path: Path) -> None:
    """A store written when the gate's kind was "heldout-gate" (rows rewritten here as such a store holds them)."""
    import sqlite3

    store = LineageStore(tmp_path / "lineage.db")
    rl_run(store)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE trials SET kind = 'heldout-gate' WHERE kind = 'validation-gate'")
    gates = [t for t in store.trials("grpo") if t.step in (0, 2, 4, 6) and t.kind != "rl-step"]
    assert [t.kind for t in gates] == ["validation-gate"] * 4
    best = store.best("grpo")
    assert best is not None and best.trial_id == "grpo/gate-0002"  # still only gates compete, never step 6


def test_best_outside_rl_takes_any_completed_trial_and_skips_failures(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    base = store.record_trial(Trial(run_id="ablate", kind="baseline", status="baseline", metric=1.08, direction="min"))
    for metric, status in ((1.07, "keep"), (0.90, "crash"), (1.075, "discard"), (0.95, "eval_budget_overrun")):
        store.record_trial(
            Trial(run_id="ablate", kind="eval", status=status, metric=metric, direction="min", parent_id=base.trial_id)
        )
    best = store.best("ablate")
    assert best is not None and (best.metric, best.status) == (1.07, "keep")


def test_best_ties_go_to_the_earlier_trial_and_directions_must_agree(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trial(Trial(run_id="a", trial_id="a/1", kind="eval", status="keep", metric=0.5))
    store.record_trial(Trial(run_id="a", trial_id="a/2", kind="eval", status="keep", metric=0.5))
    best = store.best("a")
    assert best is not None and best.trial_id == "a/1"
    store.record_trial(Trial(run_id="b", trial_id="b/1", kind="eval", status="keep", metric=2.0, direction="min"))
    with pytest.raises(LineageError, match=r"direction.*a/1.*b/1"):
        store.best()
    assert store.best("b") is not None


def test_chain_runs_root_to_best_across_runs(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    sft = store.record_trial(Trial(run_id="sft", trial_id="sft/final", kind="sft", status="keep", metric=0.06))
    store.record_trial(
        Trial(run_id="rl", trial_id="rl/gate-0000", parent_id=sft.trial_id, kind="validation-gate", status="baseline")
    )
    store.record_trial(
        Trial(run_id="rl", trial_id="rl/step-0001", parent_id="rl/gate-0000", kind="rl-step", status="keep")
    )
    store.record_trial(
        Trial(
            run_id="rl",
            trial_id="rl/gate-0001",
            parent_id="rl/step-0001",
            kind="validation-gate",
            status="keep",
            metric=0.1,
        )
    )
    best = store.best("rl")
    assert best is not None
    assert [t.trial_id for t in store.chain(best.trial_id)] == [
        "sft/final",
        "rl/gate-0000",
        "rl/step-0001",
        "rl/gate-0001",
    ]
    with pytest.raises(LineageError, match="no trial 'rl/nope'"):
        store.chain("rl/nope")


def test_latest_and_runs(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    rl_run(store, "one")
    rl_run(store, "two")
    assert store.runs() == ["one", "two"]
    assert [t.trial_id for t in store.latest(2, "one")] == ["one/step-0006", "one/gate-0006"]
    assert store.latest(0) == []
    assert store.latest(1)[0].trial_id == "two/gate-0006"
    with pytest.raises(LineageError, match="no trials of run 'three'"):
        store.latest(3, "three")


def test_bad_records_are_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    kept = store.record_trial(Trial(run_id="r", trial_id="r/1", kind="eval", status="keep", metric=0.1))
    with pytest.raises(LineageError, match="'r/1' is already in the store"):
        store.record_trial(Trial(run_id="r", trial_id="r/1", kind="eval", status="keep"))
    with pytest.raises(LineageError, match="trial 'r/2': parent 'r/missing' is not in the store"):
        store.record_trial(Trial(run_id="r", trial_id="r/2", parent_id="r/missing", kind="eval", status="keep"))
    # A batch is atomic: the good first trial of a failing batch is not kept either.
    with pytest.raises(LineageError, match="'r/1' is already in the store"):
        store.record_trials(
            [
                Trial(run_id="r", trial_id="r/3", kind="eval", status="keep"),
                Trial(run_id="r", trial_id="r/1", kind="eval", status="keep"),
            ]
        )
    with pytest.raises(ValueError, match="status"):
        Trial(run_id="r", kind="eval", status="kept")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric must be finite"):
        Trial(run_id="r", kind="eval", status="keep", metric=float("nan"))
    assert store.trials() == [kept]


def test_reading_a_missing_store_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "lineage.db"
    with pytest.raises(LineageError, match=r"no lineage store at .*nowhere"):
        LineageStore(missing).trials()
    assert not missing.exists()
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database, just notes\n" * 100)
    with pytest.raises(LineageError, match=r"notes.txt: file is not a database"):
        LineageStore(garbage).trials()


def test_store_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    rl_run(store)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 10


CARD_SCRIPT = (
    "import sys; from fieldkit.lineage import LineageStore; sys.stdout.write(LineageStore(sys.argv[1]).card('grpo'))"
)


def test_card_sections_and_determinism(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    rl_run(store)
    card = store.card("grpo", CardSizes(top_k=3, recent_n=4, last_m=2))
    headings = [line for line in card.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Current best",
        "## Chain root → best",
        "## Top kept (1 of 1)",
        "## Recent (4, newest first)",
        "## Last 2 in full",
    ]
    assert "- trial: `grpo/gate-0002` (validation-gate step 2, status keep)" in card
    assert "- validation.task_pass: 0.080000 (higher is better)" in card
    chain_block = card.split("## Chain root → best")[1].split("```")[1]
    assert [line.split(" [")[0].removeprefix("└─ ") for line in chain_block.strip().splitlines()] == [
        "grpo/gate-0000",
        "grpo/step-0001",
        "grpo/step-0002",
        "grpo/gate-0002",
    ]
    last_full = card.split("## Last 2 in full")[1]
    assert "Notes: gate 6: adapter v6" in last_full and "Hypothesis: GRPO step 6" in last_full

    # Same state -> same bytes: again here, from a copy of the file, and in fresh interpreters with other hash seeds.
    default_card = store.card("grpo")
    assert store.card("grpo") == default_card
    copy = tmp_path / "copy.db"
    shutil.copy(store.path, copy)
    assert LineageStore(copy).card("grpo") == default_card
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", CARD_SCRIPT, str(copy)],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        assert out == default_card.encode()

    # A new trial changes the card.
    store.record_trial(Trial(run_id="grpo", kind="aborted", status="harness_abort", notes="node lost"))
    assert store.card("grpo") != default_card


def test_card_escapes_table_cells(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trial(
        Trial(run_id="x", kind="eval", status="keep", metric=1.0, hypothesis="a | b\nnext line " + "y" * 200)
    )
    card = store.card("x")
    row = next(line for line in card.splitlines() if line.startswith("| `x/0001`"))
    assert "a \\| b next line" in row and row.endswith("… |") and "\n" not in row


def test_empty_run_card_says_so(tmp_path: Path) -> None:
    store = LineageStore(tmp_path / "lineage.db")
    store.record_trial(Trial(run_id="crashy", kind="aborted", status="preflight_crash"))
    card = store.card("crashy")
    assert "*(no completed trial with a metric yet)*" in card
    assert "1 trials: preflight_crash 1" in card


def test_provenance_names_the_commit(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    prov = capture_provenance(repo)
    assert prov.code_version.removesuffix("-dirty") == head
    import numpy

    assert prov.packages["numpy"] == numpy.__version__
    assert capture_provenance(tmp_path).code_version == ""  # not a git checkout
