"""`fieldkit config validate|explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console, err_console
from fieldkit.config import ConfigError, RunConfig, field_reasons

app = typer.Typer(help="Validate and explain run configs.", no_args_is_help=True)


def load_config(path: Path) -> RunConfig:
    """Load a RunConfig or exit 2 with every problem listed, one per line."""
    try:
        return RunConfig.from_yaml(path)
    except ConfigError as exc:
        err_console.print(f"[red]{exc.source}: invalid config[/red]")
        for problem in exc.problems:
            err_console.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from exc


@app.command("validate")
def validate(path: Annotated[Path, typer.Argument(help="a RunConfig YAML file")]) -> None:
    """Check a config; print the problems (dotted field, value, what is allowed) and exit 2 on any."""
    cfg = load_config(path)
    console.print(
        f"[green]ok[/green] {path}: run {cfg.run_name!r}, algorithm {cfg.algorithm.name}, "
        f"model {cfg.model.name_or_path}, config hash {cfg.config_hash()}"
    )


@app.command("explain")
def explain(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """List every config field with the reason for its default."""
    reasons = field_reasons()
    if as_json:
        print(json.dumps(reasons, indent=2))
        return
    from rich.table import Table

    table = Table("field", "why this default")
    for field, reason in reasons.items():
        table.add_row(field, reason)
    console.print(table)
