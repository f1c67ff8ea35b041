"""`ray job submit` against a token-auth head started like a user would, with the client env we document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import submit_job

from services.cluster import client_env

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent


def test_job_submit_with_token_auth(head_cluster: str, tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text("import ray\nray.init()\nprint('CPUS', ray.cluster_resources()['CPU'])\n")
    ray = str(BIN / "ray")
    env = client_env()
    address = ["--address", head_cluster]
    submit = submit_job(head_cluster, tmp_path, ["python", "job.py"], timeout=180)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "succeeded" in submit.stdout.lower()
    job_id = next(word.strip("'") for word in submit.stdout.split() if word.strip("'").startswith("raysubmit_"))
    status = subprocess.run([ray, "job", "status", *address, job_id], env=env, capture_output=True, text=True)
    assert "succeeded" in status.stdout.lower()
    logs = subprocess.run([ray, "job", "logs", *address, job_id], env=env, capture_output=True, text=True)
    assert "CPUS 4.0" in logs.stdout


def test_job_api_refuses_a_client_without_the_token(head_cluster: str) -> None:
    import httpx

    response = httpx.get(f"{head_cluster}/api/jobs/", timeout=10)
    assert response.status_code in {401, 403}
