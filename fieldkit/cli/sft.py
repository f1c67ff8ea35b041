"""`fieldkit sft --pairs qa.jsonl`: LoRA SFT on your own Q&A pairs, with a before/after report on held-out pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fieldkit.cli.console import console, err_console


def sft(
    pairs: Annotated[
        Path | None, typer.Option(help="Q&A pairs JSONL (question/answer or messages); default: the embedded 240")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML: RunConfig sections (model, lora, sft, paths) and qa:")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output directory (default: runs/<run_name>/sft)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Train a LoRA adapter on the pairs (the learner's SFT path), score the held-out split before and after
    (refusal rate, checked accuracy, style similarity), and write the adapter, report.md/json and replies.jsonl."""
    from rich.progress import Progress

    from fieldkit.config import ConfigError
    from fieldkit.rag.config import QaConfig, load_with_section
    from fieldkit.rag.records import RagDataError, default_data, load_pairs
    from fieldkit.training.qa_sft import ROWS, interval, run_qa_sft

    try:
        cfg, qa = load_with_section(config, "qa", QaConfig, {"pairs": pairs} if pairs else {})
        records = load_pairs(qa.pairs or default_data("pairs.jsonl"))
    except (ConfigError, RagDataError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    out_dir = out or cfg.paths.runs_dir / cfg.run_name / "sft"
    out_dir.mkdir(parents=True, exist_ok=True)
    with Progress(console=err_console, transient=True) as bars:
        task = bars.add_task("LoRA SFT", total=None)

        def progress(done: int, total: int) -> None:
            bars.update(task, completed=done, total=total)

        try:
            report = run_qa_sft(cfg, qa, records, out_dir, progress)
        except ValueError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report))
        return
    from rich.table import Table

    table = Table("held-out metric", "before", "after", title=f"{report['held_out_pairs']} held-out pairs")
    for name, title in ROWS.items():
        table.add_row(title, interval(report["before"][name]), interval(report["after"][name]))
    console.print(table)
    console.print(f"adapter: {report['adapter']}  (fieldkit serve --adapter, fieldkit rag eval --adapter)")
    console.print(f"report: {out_dir / 'report.md'}")
