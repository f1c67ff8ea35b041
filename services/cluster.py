"""Start or connect to Ray.

Embedded default: a local cluster started in-process, its dashboard (and Jobs API) on 127.0.0.1:8265. Ray 2.60 runs
local clusters with token authentication: `ray.init()` writes the token to ~/.ray/auth_token, and every client
(`ray job submit`, the Jobs SDK, the dashboard's HTTP API) must run with RAY_AUTH_MODE=token to send it. We keep
auth on and hand clients the environment they need (`client_env`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from fieldkit.machine import RAY_TOKEN_PATH
from services.logs import LOG_DIR_ENV

DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8265
AUTH_TOKEN_PATH = RAY_TOKEN_PATH  # one place says where Ray keeps the token (fieldkit.machine; the doctor reads it too)


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    dashboard_url: str
    started_here: bool


def connect(address: str | None = None, *, num_cpus: int | None = None, log_dir: Path | None = None) -> ClusterInfo:
    """Connect to `address` (or $RAY_ADDRESS); with neither, start a local cluster in this process.

    A driver launched by `ray job submit` finds $RAY_ADDRESS set by Ray and joins that cluster. With `log_dir`,
    a quiet run: the actors' output goes to files there instead of this console (services.logs). A process that
    is already connected keeps the connection as it was made.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    dashboard = f"{DASHBOARD_HOST}:{DASHBOARD_PORT}"
    started_here = False
    if not ray.is_initialized():
        quiet: dict[str, Any] = {}
        if log_dir is not None:
            # unbuffered: an actor's child processes (vLLM's engine core) write to a file, where Python would
            # buffer 8 KB at a time and a process killed at shutdown would take its last lines with it
            env_vars = {LOG_DIR_ENV: str(log_dir), "PYTHONUNBUFFERED": "1"}
            quiet = {"log_to_driver": False, "runtime_env": {"env_vars": env_vars}}
        if address:
            context = ray.init(address=address, **quiet)
        else:
            context = _start_local(num_cpus, quiet)
            started_here = True
        dashboard = context.dashboard_url or dashboard
    return ClusterInfo(ray.get_runtime_context().gcs_address, f"http://{dashboard}", started_here)


def _start_local(num_cpus: int | None, options: dict[str, Any], attempts: int = 3) -> Any:
    """A new local cluster with its dashboard on 8265, or on a free port when that is taken. Two drivers started at
    the same moment can both find a port free and race for it: the loser starts again on another port."""
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(
                address="local",  # a new cluster: never join whatever `ray start` left on this machine
                num_cpus=num_cpus,
                include_dashboard=True,
                dashboard_host=DASHBOARD_HOST,
                dashboard_port=dashboard_port(),
                **options,
            )
        except Exception as exc:
            if "port for dashboard" not in str(exc) or attempt == attempts:
                raise
            ray.shutdown()  # what the failed start left, before the next try


def dashboard_port() -> int:
    """8265 when it is free; otherwise (another cluster on this machine holds it) any free port."""
    for port in (DASHBOARD_PORT, 0):
        with socket.socket() as probe:
            try:
                probe.bind((DASHBOARD_HOST, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free TCP port on {DASHBOARD_HOST}")


def ensure_auth_token() -> Path:
    """Make sure the cluster token exists (what `ray start --head` needs first); returns its path."""
    if not AUTH_TOKEN_PATH.exists() and not os.environ.get("RAY_AUTH_TOKEN"):
        ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
        subprocess.run([ray_cli, "get-auth-token", "--generate"], check=True, capture_output=True)
    return AUTH_TOKEN_PATH


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Ray CLIs (`ray start`, `ray job submit`) against a token-auth cluster.

    This interpreter's bin directory goes first on PATH so that a head started with it runs job entrypoints
    (`python -m services.train`) with the project's virtual environment.
    """
    env = dict(os.environ if base is None else base)
    env["RAY_AUTH_MODE"] = "token"
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env
