"""`fieldkit config validate|explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fieldkit.cli.console import console, err_console
from fieldkit.config import ConfigError, RunConfig, field_reasons

app = typer.Typer(help="Validate and explain run configs.", no_args_is_help=True)

SET_HELP = "override one config value, KEY=VALUE with KEY dotted (rollout.group_size=8); repeatable; VALUE is YAML"
SetOption = Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)]


def load_config(path: Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a RunConfig (None: the defaults) with `--set` overrides, or exit 2 with every problem, one per line."""
    from fieldkit.overrides import load_config as resolve

    try:
        return resolve(path, overrides or ())
    except ConfigError as exc:
        err_console.print(f"[red]{exc.source}: invalid config[/red]", highlight=False, soft_wrap=True)
        for problem in exc.problems:  # one line each, however narrow the terminal: tools grep them
            err_console.print(f"  - {problem}", markup=False, highlight=False, soft_wrap=True)
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
def explain(
    config: Annotated[Path | None, typer.Option(help="a RunConfig YAML (default: the defaults)")] = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Every config field: its resolved value (file, then --set) and the reason for its default."""
    from fieldkit.overrides import overridden_keys

    cfg = load_config(config, overrides)
    values = _flat(cfg.model_dump(mode="json"))
    marked = overridden_keys(overrides or [])
    reasons = field_reasons()
    if as_json:
        rows = {f: {"value": values.get(f), "why": why, "set": f in marked} for f, why in reasons.items()}
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("field", "value", "why this default", title=f"{config or 'defaults'}, hash {cfg.config_hash()}")
    for field, reason in reasons.items():
        value = json.dumps(values.get(field))
        table.add_row(field, f"[bold]{value}[/bold] (--set)" if field in marked else value, reason)
    console.print(table)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted field -> value; a section is a dict, a dict-valued field would be a leaf (none is today)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
