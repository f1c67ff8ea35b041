"""`fieldkit serve`: the OpenAI-compatible endpoint over the base model and trained adapters, in the foreground."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fieldkit.cli.config import load_config
from fieldkit.cli.console import console, err_console
from fieldkit.config import RunConfig
from fieldkit.storage import StorageError


def serve(
    adapter: Annotated[
        list[str] | None,  # not Path: a URI's // would collapse
        typer.Option(
            "--adapter",
            help="adapter to serve: a directory (runs/<run>/best) or a run-storage URI (s3://bucket/<run>/best); "
            "repeatable",
        ),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="model id of each --adapter, in order (default: its ref file's or dir's name)"),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="HTTP port (serve.port)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (serve.host, 127.0.0.1)")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="RunConfig YAML: model, engine, paths (default: the adapter run's config.yaml)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the endpoint as JSON once it serves")] = False,
) -> None:
    """Serve the base model and adapters at http://HOST:PORT/v1 until interrupted (Ctrl-C or SIGTERM)."""
    adapters = adapter or []
    names = name or []
    if len(names) > len(adapters):
        err_console.print(f"[red]error:[/red] {len(names)} --name for {len(adapters)} --adapter")
        raise typer.Exit(2)
    cfg = load_config(config) if config else RunConfig()
    overrides = {k: v for k, v in {"port": port, "host": host}.items() if v is not None}
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update=overrides)})

    from services.serve import AdapterSource, start_endpoint, stop_endpoint
    from services.serve.adapters import AdapterDirError
    from services.serve.launch import EndpointStartError, config_from_runs

    sources = [AdapterSource(path, names[i] if i < len(names) else None) for i, path in enumerate(adapters)]
    try:
        if config is None:  # the base model the adapters were trained on, not the default tiny one
            cfg, run_config = config_from_runs(sources, cfg)
            if run_config is not None:
                console.print(f"base model {cfg.model.name_or_path} ({cfg.model.engine}) from {run_config}")
        with console.status("starting Ray Serve and the policy engine"):
            endpoint = start_endpoint(cfg, sources)
    except (AdapterDirError, ValueError, StorageError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except EndpointStartError as exc:  # one message and an exit: Serve does not start the replica again
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"base_url": endpoint.base_url, "models": endpoint.models, "ray": endpoint.ray_dashboard_url}))
    else:
        console.print(f"[green]serving[/green] {endpoint.base_url}  models: {', '.join(endpoint.models)}")
        console.print(f"Ray dashboard: {endpoint.ray_dashboard_url}   (Ctrl-C stops the endpoint)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a service manager's stop ends it like Ctrl-C
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    stop_endpoint(cfg.serve.app_name)
    console.print("endpoint stopped")
