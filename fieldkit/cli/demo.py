"""`fieldkit demo`: what `make demo` runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fieldkit.cli.console import console


def demo(
    prompt: Annotated[str, typer.Option(help="user message for the smoke generation")] = "List the files.",
) -> None:
    """Smoke run on embedded defaults: start local Ray, build the tiny model, generate through the vLLM engine."""
    from services.smoke import run_smoke

    with console.status("starting Ray and the vLLM CPU engine (about a minute)"):
        result = run_smoke(prompt)
    console.print_json(json.dumps(result))
