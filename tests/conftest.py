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
    # the job agent's HTTP port too: its default (52365) is often held by another cluster on this machine, and an
    # agent that cannot bind it stays up without HTTP, so every submission answers "No available agent"
    command += [f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={free_port()}"]
    command += ["--num-cpus=4", "--disable-usage-stats"]
    env = {**client_env(), "RAY_metrics_report_interval_ms": "2000"}  # gauges reach Prometheus within a short run
    started = subprocess.run([Path(sys.executable).parent / "ray", *command], env=env, capture_output=True)
    try:
        assert started.returncode == 0, started.stdout.decode() + started.stderr.decode()
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        for sig in ("TERM", "KILL"):
            subprocess.run(["pkill", f"-{sig}", "-f", temp_dir])
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_job(
    address: str, working_dir: Path, entrypoint: list[str], timeout: float, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`ray job submit [options]` as the README says, once the head's job agent answers (`wait_for_job_agent`)."""
    from services.cluster import client_env
    from services.jobs import wait_for_job_agent

    wait_for_job_agent(address)
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address, *options]
    command += ["--working-dir", str(working_dir), "--", *entrypoint]
    return subprocess.run(command, env=client_env(), capture_output=True, text=True, timeout=timeout)


def prometheus_names(address: str) -> set[str]:
    """The fieldkit metric names this cluster's nodes export to Prometheus right now, as Prometheus names them
    (`ray_fieldkit_...`): read from the endpoints Ray lists, only the samples of this cluster's session (the list
    is a file other clusters on this machine write too)."""
    import httpx

    from services.dashboard.ray_source import parse_samples
    from services.jobs import auth_headers

    try:
        session = httpx.get(f"{address}/api/version", headers=auth_headers(), timeout=10).json()["session_name"]
        targets = httpx.get(f"{address}/api/prometheus/sd", headers=auth_headers(), timeout=10).json()
    except (httpx.HTTPError, ValueError, KeyError):  # a busy head: the next poll asks again
        return set()
    names = set()
    for target in (t for group in targets for t in group["targets"]):
        try:
            text = httpx.get(f"http://{target}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        names |= {f"ray_{sample.name}" for sample in parse_samples(text, session)}
    return names


def write_run_config(
    tmp: Path, run_name: str, max_steps: int, n_train: int = 12, n_validation: int = 2, relative: bool = False,
    **sections: dict,
) -> Path:  # fmt: skip
    """A small run on the tiny model (2 tasks x 2 rollouts a step) in `tmp`, its corpus 2 tasks per persona (16)
    with `n_train` of them for training (12, 2 a step: the pool cannot saturate and stop a short run early),
    `n_validation` for the gates and the rest for test; `sections` override config sections. `relative`: the run's
    paths are written relative to `tmp` (for a run whose project home is `tmp`); the model cache stays shared."""
    import yaml

    from fieldkit.gym.corpus import write_corpus
    from fieldkit.gym.generator import generate_tasks

    corpus = tmp / "corpus"
    if not (corpus / "tasks.jsonl").exists():
        write_corpus(corpus, generate_tasks(per_persona=2, seed=0), n_train=n_train, n_validation=n_validation, seed=0)
    config: dict = {
        "run_name": run_name,
        "max_steps": max_steps,
        "model": {"max_model_len": 2048},
        "lora": {"rank": 8, "alpha": 16, "max_lora_rank": 16},
        "rollout": {"tasks_per_step": 2, "group_size": 2, "max_turns": 2, "max_tokens_per_turn": 16, "workers": 1},
        "sandbox": {"pool_size": 2},
        "eval": {"every_n_steps": 2, "validation_limit": 2},
        "paths": {
            "runs_dir": str(tmp / "runs"),
            "models_dir": str(REPO / "runs" / "models"),  # the tiny model cache shared with the other tests
            "corpus_dir": str(corpus),
            "lineage_db": str(tmp / "runs" / "lineage.db"),
        },
    }
    if relative:
        config["paths"] = {"runs_dir": "runs", "models_dir": config["paths"]["models_dir"], "corpus_dir": "corpus",
                           "lineage_db": "runs/lineage.db"}  # fmt: skip
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    path = tmp / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def kill_sandbox_from_outside(where: dict) -> None:
    """What an OOM killer or an operator does to a sandbox (`SandboxPool.describe_lease` says where it lives):
    SIGKILL, without asking the pool. A Docker sandbox loses its container; a bwrap sandbox its running commands,
    or, when none runs, its workspace (it has no process while idle)."""
    import signal

    if where["container_id"] is not None:
        import docker

        docker.from_env().containers.get(where["container_id"]).kill()
        return
    files = f"{where['workspace']}/files"
    victims = [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and _cmdline(proc).startswith("bwrap") and files in _cmdline(proc)
    ]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    if not victims:
        subprocess.run(["umount", "-l", where["workspace"]], check=True)
        subprocess.run(["rm", "-rf", where["workspace"]], check=True)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
