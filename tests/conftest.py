"""Shared fixtures. Tests use real components; the markers in pyproject.toml say which ones a test starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# No test may reach a model hub, and the vLLM CPU engine must not reserve its default multi-GB KV cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen2 model, built once and cached under runs/models (as the demo does)."""
    from fieldkit.tiny_model import build_tiny_model

    return build_tiny_model(REPO / "runs" / "models")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests run beside other clusters: never a fixed port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_sandbox_backend(name: str) -> str:
    """Skip unless this machine runs sandbox backend `name`; with FIELDKIT_REQUIRE_DOCKER=1 (CI) a missing Docker
    engine fails the test instead, so the Docker tests cannot silently stop running."""
    from sandbox.probe import backend_problem

    problem = backend_problem(name)
    if problem is not None:
        if name == "docker" and os.environ.get("FIELDKIT_REQUIRE_DOCKER") == "1":
            pytest.fail(f"FIELDKIT_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(f"sandbox backend {name} unavailable: {problem}")
    return name


@pytest.fixture
def head_cluster():
    """A head node on free ports, started the way the README says (token first, then `ray start --head`).

    It gets its own temp dir, which every one of its processes names on its command line: teardown stops exactly
    those (`ray stop` would also stop every other Ray cluster on this machine).
    """
    from services.cluster import client_env, ensure_auth_token

    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayhead")  # short: Ray's socket paths live under it
    ensure_auth_token()
    command = ["start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}"]
    command += [f"--dashboard-port={dashboard_port}", "--num-cpus=4", "--disable-usage-stats"]
    started = subprocess.run([Path(sys.executable).parent / "ray", *command], env=client_env(), capture_output=True)
    try:
        assert started.returncode == 0, started.stdout.decode() + started.stderr.decode()
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        for sig in ("TERM", "KILL"):
            subprocess.run(["pkill", f"-{sig}", "-f", temp_dir])
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_job(
    address: str, working_dir: Path, entrypoint: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ray job submit` as the README says. A head that has just started may not have its job agent yet (Ray
    answers 500 "No available agent ... try again later"): that answer alone is retried, for up to a minute."""
    from services.cluster import client_env

    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address]
    command += ["--working-dir", str(working_dir), "--", *entrypoint]
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(command, env=client_env(), capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(3)
