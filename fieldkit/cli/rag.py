"""`fieldkit rag eval`: score retrieval-augmented answering variants on held-out questions with an LLM judge, as
parallel Ray tasks against the policy server (or any OpenAI-compatible endpoint)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fieldkit.cli.console import console, err_console

app = typer.Typer(help="Evaluate retrieval-augmented answering (Ragas-style metrics, LLM judge, on Ray).")


@app.callback()
def _group() -> None:
    """Keeps `eval` a subcommand while it is the only one."""


@app.command("eval")
def eval_(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML: a rag: section beside RunConfig sections (model, paths)")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="LoRA directory for the adapter variants (rag.adapter)")] = None,
    base_url: Annotated[str | None, typer.Option(help="an OpenAI-compatible endpoint (rag.base_url)")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="the judge's endpoint (rag.judge_base_url)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="evaluate the first N questions (rag.limit)")] = None,
    out: Annotated[Path | None, typer.Option(help="report directory (default: runs/<run_name>/rag)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summaries as JSON")] = False,
) -> None:
    """Run every variant of rag.variants on the question set (default: the embedded 48 questions over the project's
    own corpus) and write questions.jsonl, report.json, report.md and variants.png, plus a lineage trial per
    variant. The judge is calibrated first; one below rag.agreement_threshold is flagged in the report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fieldkit.config import ConfigError
    from fieldkit.rag.config import RagConfig, load_with_section
    from fieldkit.rag.records import RagDataError
    from fieldkit.rag.report import METRICS, cell

    given = {"adapter": adapter, "base_url": base_url, "judge_base_url": judge_base_url, "limit": limit}
    try:
        cfg, rag = load_with_section(config, "rag", RagConfig, {k: v for k, v in given.items() if v is not None})
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    from services.rag import run_rag_eval

    out_dir = out or cfg.paths.runs_dir / cfg.run_name / "rag"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=as_json) as bars:  # fmt: skip

        def progress(label: str, total: int) -> Callable[[], None]:
            task = bars.add_task(label, total=total)
            return lambda: bars.advance(task)

        try:
            summaries, calibration, notes = run_rag_eval(cfg, rag, out_dir, progress)
        except (RagDataError, FileNotFoundError, ValueError) as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"out": str(out_dir), "calibration": calibration.model_dump(),
                          "variants": [s.model_dump() for s in summaries], "notes": notes}))  # fmt: skip
        return
    from rich.table import Table

    table = Table("metric", *(s.variant for s in summaries), title=f"RAG evaluation (k={rag.k})")
    for name, (title, scale) in METRICS.items():
        table.add_row(title, *(cell(s.estimates[name], scale) for s in summaries))
    table.add_row("failed", *(f"{s.failed}/{s.questions}" for s in summaries))
    console.print(table)
    agreement = "-" if calibration.agreement is None else f"{100 * calibration.agreement:.0f}%"
    line = f"judge {calibration.judge}: agreement {agreement} on {calibration.items} calibration items"
    console.print(f"[red]{line}: below threshold, do not trust its scores[/red]" if calibration.flagged else line)
    for note in notes:
        console.print(note)
    console.print(f"report: {out_dir / 'report.md'}")
