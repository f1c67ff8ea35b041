"""`fieldkit model tiny`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console

app = typer.Typer(help="Build the models the project makes itself.", no_args_is_help=True)


@app.command("tiny")
def tiny(
    models_dir: Annotated[Path, typer.Option(help="cache directory")] = Path("runs/models"),
    seed: Annotated[int, typer.Option(help="weights seed")] = 0,
) -> None:
    """Build (or find cached) the tiny Qwen2 test model and print its directory."""
    from fieldkit.tiny_model import TinyModelSpec, build_tiny_model

    with console.status("building the tiny model"):
        path = build_tiny_model(models_dir, TinyModelSpec(seed=seed))
    print(path)
