"""`ray job submit` against a token-auth head started like a user would, with the client env we document."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.cluster import client_env, ensure_auth_token

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head_cluster():
    """A head node started the way the README says: token generated once, then `ray start --head`."""
    gcs_port, dashboard_port = free_port(), free_port()
    env = client_env()
    ensure_auth_token()
    command = ["start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1"]
    command += [f"--dashboard-port={dashboard_port}", "--num-cpus=1", "--disable-usage-stats"]
    started = subprocess.run([BIN / "ray", *command], env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True)


def test_job_submit_with_token_auth(head_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("import ray\nray.init()\nprint('CPUS', ray.cluster_resources()['CPU'])\n")
    ray = str(BIN / "ray")
    env = client_env()
    address = ["--address", head_cluster]
    submit = subprocess.run(
        [ray, "job", "submit", *address, "--working-dir", str(tmp_path), "--", "python", "job.py"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "succeeded" in submit.stdout.lower()
    job_id = next(word.strip("'") for word in submit.stdout.split() if word.strip("'").startswith("raysubmit_"))
    status = subprocess.run([ray, "job", "status", *address, job_id], env=env, capture_output=True, text=True)
    assert "succeeded" in status.stdout.lower()
    logs = subprocess.run([ray, "job", "logs", *address, job_id], env=env, capture_output=True, text=True)
    assert "CPUS 1.0" in logs.stdout


def test_job_api_refuses_a_client_without_the_token(head_cluster: str) -> None:
    import httpx

    response = httpx.get(f"{head_cluster}/api/jobs/", timeout=10)
    assert response.status_code in {401, 403}
