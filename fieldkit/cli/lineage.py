"""`fieldkit lineage show|best|chain|card|import|export`: read and feed the trial lineage store."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from fieldkit.cli.console import console, err_console

if TYPE_CHECKING:
    from fieldkit.lineage import LineageStore, Trial

app = typer.Typer(
    help="The trial lineage store: trials, best on validation, chains, the card, TSV.", no_args_is_help=True
)

Db = Annotated[Path, typer.Option("--db", help="the SQLite lineage store")]
Run = Annotated[str | None, typer.Option("--run", help="only this run's trials")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable")]
DEFAULT_DB = Path("runs/lineage.db")  # RunConfig.paths.lineage_db's default


def open_store(db: Path) -> LineageStore:
    from fieldkit.lineage import LineageStore

    return LineageStore(db)


def fail(exc: Exception) -> typer.Exit:
    err_console.print(
        f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True
    )  # no wrapping: greppable
    return typer.Exit(2)


def print_trials(trials: Sequence[Trial], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps([t.model_dump(mode="json") for t in trials], indent=2))
        return
    from rich.table import Table

    table = Table("trial", "run", "kind", "step", "status", "metric", "hypothesis", title=title)
    for t in trials:
        metric = "—" if t.metric is None else f"{t.metric:.6g} {t.metric_name}".rstrip()
        step = "—" if t.step is None else str(t.step)
        table.add_row(t.trial_id, t.run_id, t.kind, step, t.status, metric, " ".join(t.hypothesis.split())[:80])
    console.print(table)


@app.command("show")
def show(
    db: Db = DEFAULT_DB,
    run: Run = None,
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="only the n most recent (0 = all)")] = 0,
    as_json: AsJson = False,
) -> None:
    """List trials, oldest first."""
    from fieldkit.lineage import LineageError

    store = open_store(db)
    try:
        trials = store.latest(last, run) if last else store.trials(run)
    except LineageError as exc:
        raise fail(exc) from exc
    print_trials(trials, as_json, f"{len(trials)} trials" + (f" of run {run}" if run else ""))


@app.command("best")
def best(
    db: Db = DEFAULT_DB,
    run: Run = None,
    metric: Annotated[str | None, typer.Option(help="rank by this entry of the metrics JSON")] = None,
    direction: Annotated[Literal["max", "min"] | None, typer.Option(help="override the trials' direction")] = None,
    as_json: AsJson = False,
) -> None:
    """The best completed trial (in RL runs: the best validation gate). Exit 1 when there is none yet."""
    from fieldkit.lineage import LineageError

    try:
        found = open_store(db).best(run, metric, direction)
    except LineageError as exc:
        raise fail(exc) from exc
    if found is None:
        err_console.print("no completed trial with a metric yet")
        raise typer.Exit(1)
    print_trials([found], as_json, "best")


@app.command("chain")
def chain(
    trial_id: Annotated[str | None, typer.Argument(help="the trial to trace (default: the best)")] = None,
    db: Db = DEFAULT_DB,
    run: Run = None,
    as_json: AsJson = False,
) -> None:
    """The chain of parents from the root down to a trial (default: the best of --run)."""
    from fieldkit.lineage import LineageError

    store = open_store(db)
    try:
        target = trial_id or getattr(store.best(run), "trial_id", None)
        if target is None:
            raise LineageError("no best trial yet to trace; name a trial id")
        trials = store.chain(target)
    except LineageError as exc:
        raise fail(exc) from exc
    print_trials(trials, as_json, f"chain root → {target}")


@app.command("card")
def card(
    db: Db = DEFAULT_DB,
    run: Run = None,
    top_k: Annotated[int, typer.Option(min=0, help="kept trials in the leaderboard")] = 10,
    recent: Annotated[int, typer.Option(min=0, help="recent trials in the activity table")] = 20,
    full: Annotated[int, typer.Option(min=0, help="latest trials shown with full hypothesis and notes")] = 5,
    out: Annotated[Path | None, typer.Option(help="write the card to this file instead of stdout")] = None,
) -> None:
    """Render the Markdown lineage card (the same store renders the same bytes)."""
    from fieldkit.lineage import CardSizes, LineageError
    from fieldkit.runs import atomic_write_bytes

    try:
        text = open_store(db).card(run, CardSizes(top_k=top_k, recent_n=recent, last_m=full))
    except LineageError as exc:
        raise fail(exc) from exc
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(out, text.encode())
        console.print(f"wrote {out}")


@app.command("import")
def import_tsv(
    tsv: Annotated[Path, typer.Argument(help="a 17-column results.tsv")],
    run: Annotated[str, typer.Option("--run", help="run id the trials are filed under")],
    db: Db = DEFAULT_DB,
    metric_name: Annotated[str, typer.Option(help="what core_metric measures")] = "core_metric",
    direction: Annotated[Literal["max", "min"], typer.Option(help="whether a higher core_metric is better")] = "min",
) -> None:
    """Import a results.tsv: every row, or (on any bad row) none."""
    from fieldkit.lineage import LineageError, read_tsv

    try:
        stored = open_store(db).record_trials(read_tsv(tsv, run, metric_name, direction))
    except LineageError as exc:
        raise fail(exc) from exc
    console.print(f"imported {len(stored)} trials from {tsv} as run {run!r} into {db}")


@app.command("export")
def export_tsv(
    out: Annotated[Path, typer.Argument(help="the results.tsv to write")],
    run: Annotated[str, typer.Option("--run", help="the run to export")],
    db: Db = DEFAULT_DB,
) -> None:
    """Write one run's trials in the 17-column results.tsv format."""
    from fieldkit.lineage import LineageError, write_tsv

    try:
        trials = open_store(db).trials(run)
        if not trials:
            raise LineageError(f"no trials of run {run!r} in {db}")
    except LineageError as exc:
        raise fail(exc) from exc
    write_tsv(trials, out)
    console.print(f"wrote {len(trials)} trials to {out}")
