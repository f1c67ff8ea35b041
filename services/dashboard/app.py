"""The mesh dashboard: one page and the small JSON API it polls.

GET /                 the page (static/index.html, dashboard.js, dashboard.css; no CDN: it works offline)
GET /api/cluster      actors, nodes, engine and sandbox-pool figures, read from Ray (ray_source)
GET /api/runs         training runs under the runs directory and in the lineage store
GET /api/runs/{run}   a run's per-step metrics, validation gates and lineage card (run_source)

The page keeps the history of what it polled (busy fraction over time, tokens/s); the Ray dashboard, linked from
the page, keeps everything Ray already shows. `fieldkit dashboard` runs it in the foreground; `DashboardServer`
runs it on a background thread (a training driver, tests).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.dashboard.ray_source import RayObserver
from services.dashboard.run_source import RunReader, UnknownRunError

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class DashboardSettings:
    runs_dir: Path
    lineage_db: Path
    ray_dashboard_url: str
    refresh_s: float = 2.0


def create_app(settings: DashboardSettings) -> FastAPI:
    app = FastAPI(title="fieldkit mesh dashboard", docs_url=None, redoc_url=None)
    observer = RayObserver(settings.ray_dashboard_url)
    reader = RunReader(settings.runs_dir, settings.lineage_db)
    page = (STATIC / "index.html").read_text()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/cluster")
    async def cluster() -> dict[str, Any]:
        snapshot = await observer.snapshot()
        return {
            **snapshot,
            "time": time.time(),
            "ray_dashboard_url": settings.ray_dashboard_url,
            "refresh_s": settings.refresh_s,
        }

    @app.get("/api/runs")
    async def runs() -> list[dict[str, Any]]:
        return await asyncio.to_thread(reader.runs)

    @app.get("/api/runs/{name}")
    async def run(name: str) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(reader.run, name)
        except UnknownRunError as exc:
            raise HTTPException(404, str(exc)) from None

    return app


class DashboardServer:
    """The dashboard on a background thread of this process: start() returns its URL, stop() ends it."""

    def __init__(self, settings: DashboardSettings, host: str = "127.0.0.1", port: int = 8300) -> None:
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fieldkit-dashboard", daemon=True)
        self.url = f"http://{host}:{port}/"

    def start(self, timeout_s: float = 30.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.url} (port taken?)")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def serve_dashboard(settings: DashboardSettings, host: str, port: int) -> None:
    """Run the dashboard in the foreground until interrupted."""
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
