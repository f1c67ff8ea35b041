"""`fieldkit eval report|readme`: compare policies on the same tasks from their episode files and write the report;
render the README's demo table from runs' report files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from fieldkit.cli.console import console, err_console

if TYPE_CHECKING:
    from fieldkit.eval import Comparison
    from fieldkit.gym.records import Episode

app = typer.Typer(help="Evaluate and compare policies from their episode records.", no_args_is_help=True)

DEFAULT_DB = Path("runs/lineage.db")  # RunConfig.paths.lineage_db's default
DEFAULT_RUNS = Path("runs")  # RunConfig.paths.runs_dir's default


def parse_policy(spec: str) -> tuple[str, Path]:
    """'LABEL=PATH', or a bare PATH labelled by its file (or directory) name."""
    label, sep, path = spec.partition("=")
    if not sep:
        return Path(spec).stem, Path(spec)
    if not label or not path:
        raise typer.BadParameter(f"{spec!r}: expected LABEL=PATH")
    return label, Path(path)


def headline_table(comparison: Comparison) -> object:
    from rich.table import Table

    from fieldkit.eval import METRICS
    from fieldkit.eval.report import TITLES, delta_cell, others, value_cell

    headline = comparison.slice("all")
    deltas = others(comparison)
    where = f" of the {comparison.split} split" if comparison.split else ""
    title = f"{len(comparison.task_ids)} tasks{where}; Δ against {comparison.baseline}" if deltas else None
    table = Table("metric", *comparison.policies, *(f"Δ {p}" for p in deltas), title=title)
    for metric in METRICS:
        values = [value_cell(headline.values[p], metric) for p in comparison.policies]
        table.add_row(TITLES[metric], *values, *(delta_cell(headline.deltas[p][metric]) for p in deltas))
    for k in sorted(comparison.pass_at_k[comparison.baseline]):
        table.add_row(f"pass@{k}", *(f"{100 * comparison.pass_at_k[p][k]:.1f}%" for p in comparison.policies))
    return table


def check_split_membership(episodes: Mapping[str, Sequence[Episode]], corpus: Path, split: str) -> None:
    """Refuse episodes of tasks outside `split` of corpus/split.json: a table must say which split it reports."""
    from fieldkit.eval import EvalInputError
    from fieldkit.eval.inputs import name_ids
    from fieldkit.gym.corpus import SPLIT_FILE, load_split

    try:
        members = set(getattr(load_split(corpus / SPLIT_FILE), split))
    except ValueError as exc:
        raise EvalInputError(str(exc)) from exc
    outside = {e.task_id for runs in episodes.values() for e in runs} - members
    if outside:
        raise EvalInputError(f"tasks not in the {split} split of {corpus / SPLIT_FILE}: {name_ids(outside)}")


@app.command("report")
def report(
    policies: Annotated[
        list[str],
        typer.Argument(
            help="LABEL=PATH per policy (PATH: episodes JSONL or a directory of them); the first is the baseline"
        ),
    ],
    tasks: Annotated[
        Path, typer.Option(help="the tasks.jsonl that gives each task's persona (and, with seeds, its floor)")
    ],
    baseline: Annotated[str | None, typer.Option(help="the label deltas are against (default: the first)")] = None,
    split: Annotated[
        str | None,
        typer.Option(help="train, validation or test: refuse tasks outside it (the split.json beside --tasks)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="report directory (default: runs/<run>/report)")] = None,
    run: Annotated[
        str | None, typer.Option(help="the run whose training curves to draw from the lineage store")
    ] = None,
    db: Annotated[Path, typer.Option("--db", help="the SQLite lineage store")] = DEFAULT_DB,
    bootstrap: Annotated[int, typer.Option(min=1, help="bootstrap resamples for the delta intervals")] = 2000,
    seed: Annotated[int, typer.Option(help="bootstrap seed (the same seed rebuilds the same report)")] = 0,
    k: Annotated[list[int] | None, typer.Option("--k", min=1, help="pass@k to report (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
) -> None:
    """Matched comparison (deltas with bootstrap 95% intervals and a paired sign test, per persona and assertion
    kind, pass@k, per-assertion net of the seed's floor): writes report.md, report.json and PNG plots, and prints the
    headline table."""
    from fieldkit.eval import EvalInputError, compare, load_episodes, load_floors, load_personas, write_report
    from fieldkit.lineage import LineageError, LineageStore

    if out is None and run is None:
        raise typer.BadParameter("give --out, or --run to write under runs/<run>/report", param_hint="--out")
    out_dir = out or DEFAULT_RUNS / str(run) / "report"
    specs = [parse_policy(spec) for spec in policies]
    labels = [label for label, _ in specs]
    if len(set(labels)) != len(labels):
        raise typer.BadParameter(f"policy labels must differ: {', '.join(labels)}")
    if split not in (None, "train", "validation", "test"):
        raise typer.BadParameter(f"{split!r}: expected train, validation or test", param_hint="--split")
    try:
        personas = load_personas(tasks)
        floors = load_floors(tasks)
        if floors is None:
            err_console.print(f"{tasks} holds no workspace seeds: per-assertion net of floor is left out")
        with console.status("loading episodes"):
            episodes = {label: load_episodes(path) for label, path in specs}
        if split is not None:
            check_split_membership(episodes, tasks.parent, split)
        with console.status(f"comparing ({bootstrap} bootstrap resamples)"):
            comparison = compare(
                episodes,
                personas,
                baseline=baseline,
                floors=floors,
                split=split,
                bootstrap_samples=bootstrap,
                seed=seed,
                ks=k,
            )
        curves = LineageStore(db).trials(run) if run is not None else []
        if run is not None and not curves:
            raise LineageError(f"no trials of run {run!r} in {db} to draw training curves from")
        with console.status("writing the report"):
            written = write_report(comparison, out_dir, curves)
    except (EvalInputError, LineageError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps({"files": [str(p) for p in written], "comparison": comparison.model_dump(mode="json")}))
        return
    console.print(headline_table(comparison))
    console.print(f"report: {out_dir / 'report.md'} ({len(written)} files)")


def write_readme_tables(run_dirs: list[Path], readme: Path) -> None:
    """Render the demo table of each run (its report/summary.json and report.json) into `readme` between markers."""
    from fieldkit.eval.summary import load_run_report, render_demo_tables, replace_between_markers
    from fieldkit.runs import atomic_write_bytes

    block = render_demo_tables([load_run_report(run) for run in run_dirs])
    atomic_write_bytes(readme, replace_between_markers(readme.read_text(encoding="utf-8"), block).encode())


@app.command("readme")
def readme(
    runs: Annotated[list[Path], typer.Argument(help="demo run directories (runs/<run>), one table each, in order")],
    readme_path: Annotated[Path, typer.Option("--readme", help="the file whose demo section is replaced")] = Path(
        "README.md"
    ),
) -> None:
    """Regenerate the README's demo section from the runs' report files (between its demo-table markers)."""
    try:
        write_readme_tables(runs, readme_path)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(f"{readme_path}: demo section rendered from {len(runs)} run(s)")
