"""`fieldkit dashboard`: the mesh dashboard page (actors, pools, engine, training curves), in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.config import load_config
from fieldkit.cli.console import console
from fieldkit.config import RunConfig


def dashboard(
    config: Annotated[Path | None, typer.Option("--config", help="RunConfig YAML: paths, host, port")] = None,
    ray_dashboard: Annotated[
        str, typer.Option("--ray-dashboard", help="the Ray dashboard of the cluster to show")
    ] = "http://127.0.0.1:8265",
    runs: Annotated[Path | None, typer.Option("--runs", help="runs directory (paths.runs_dir)")] = None,
    lineage_db: Annotated[Path | None, typer.Option("--lineage-db", help="lineage store (paths.lineage_db)")] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address (dashboard.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="HTTP port (dashboard.port)")] = None,
) -> None:
    """Serve the dashboard page until interrupted; it updates while a run goes."""
    from services.dashboard import DashboardSettings, serve_dashboard

    cfg = load_config(config) if config else RunConfig()
    settings = DashboardSettings(
        runs_dir=runs or cfg.paths.runs_dir,
        lineage_db=lineage_db or cfg.paths.lineage_db,
        ray_dashboard_url=ray_dashboard,
        refresh_s=cfg.dashboard.refresh_s,
    )
    bind_host, bind_port = host or cfg.dashboard.host, port or cfg.dashboard.port
    console.print(f"dashboard: http://{bind_host}:{bind_port}/   (Ray: {ray_dashboard}; Ctrl-C stops it)")
    serve_dashboard(settings, bind_host, bind_port)
