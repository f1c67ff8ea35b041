"""The driver as a Ray job, through Ray's Job SDK: submit it (once the head's job agent answers), follow its log,
stop it. What `fieldkit train --address` and `fieldkit train --stop` run.

The job is submitted the way it has to run to leave its results behind: the working directory travels (the code),
the entrypoint is this interpreter (`sys.executable`, the project's virtual environment, whatever shell started
the cluster) running `python -m services.train` with the config and its `--set` overrides, and $FIELDKIT_HOME
is the submitting directory, so the run's relative paths resolve there (fieldkit.home), not in Ray's temporary
copy. Every request carries the cluster's token (Ray runs with token authentication; services.cluster).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fieldkit.home import HOME_ENV
from services.cluster import AUTH_TOKEN_PATH

RUN_KEY = "fieldkit.run"  # the job metadata key naming the run, which `--stop RUN` looks for
ACTIVE = {"PENDING", "RUNNING"}


def auth_headers() -> dict[str, str]:
    """The Authorization header of a token-auth cluster: $RAY_AUTH_TOKEN, else the token file; none when neither."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token and AUTH_TOKEN_PATH.is_file():
        token = AUTH_TOKEN_PATH.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def wait_for_job_agent(address: str, timeout: float = 120.0) -> None:
    """Wait until the head node's dashboard agent is registered and answers, which is what a job submission needs
    (until then Ray answers 500 "No available agent to submit job", as it does right after a cluster starts).
    Asked through the dashboard's own API: the head node's id, then the agent's list of log files on that node."""
    import httpx

    headers = auth_headers()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            nodes = httpx.get(f"{address}/api/v0/nodes", headers=headers, timeout=10).json()["data"]["result"]
            head = next(node["node_id"] for node in nodes["result"] if node["is_head_node"])
            answer = httpx.get(f"{address}/api/v0/logs", params={"node_id": head}, headers=headers, timeout=10)
            if answer.status_code == 200 and answer.json()["result"]:
                return
            last = f"HTTP {answer.status_code}: {answer.text[:300]}"
        except (httpx.HTTPError, KeyError, StopIteration, ValueError, TypeError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(2)
    raise TimeoutError(f"the job agent of {address} did not answer within {timeout:.0f} s; last: {last}")


def client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers())


def driver_entrypoint(config: Path, overrides: Sequence[str], resume: bool, working_dir: Path) -> str:
    """The job's command line: this interpreter running the driver. The config is named relative to the working
    directory when it lies inside it (it travels with the job), else by its absolute path."""
    config = config.resolve()
    try:
        named = str(config.relative_to(working_dir.resolve()))
    except ValueError:
        named = str(config)
    argv = [sys.executable, "-u", "-m", "services.train", "--config", named]  # -u: the followed log keeps up
    for override in overrides:
        argv += ["--set", override]
    return shlex.join(argv + (["--resume"] if resume else []))


def submit_run(
    address: str, run_name: str, config: Path, overrides: Sequence[str], resume: bool, home: Path, working_dir: Path
) -> str:
    """Submit the driver for `run_name`; returns the job's submission id."""
    wait_for_job_agent(address)
    # only the home: the driver's own runtime_env (services.cluster.connect) sets other variables, and Ray refuses a
    # job whose runtime_env sets one of them too
    env_vars = {HOME_ENV: str(home)}
    return str(
        client(address).submit_job(
            entrypoint=driver_entrypoint(config, overrides, resume, working_dir),
            runtime_env={"working_dir": str(working_dir), "env_vars": env_vars},
            submission_id=f"fieldkit-{run_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            metadata={RUN_KEY: run_name},
        )
    )


def follow(address: str, job_id: str, write: Callable[[str], Any]) -> str:
    """Write the job's log as it grows until the job ends; returns its final status (SUCCEEDED, FAILED, STOPPED).
    A KeyboardInterrupt (Ctrl-C) propagates to the caller, which detaches: the job goes on."""
    jobs = client(address)

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            write(lines)

    asyncio.run(tail())
    deadline = time.monotonic() + 30  # the log closes a moment before the status is final
    while (status := str(jobs.get_job_status(job_id))) in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
    return status.rsplit(".", 1)[-1]


def stop_run(address: str, run: str) -> list[str]:
    """Stop the active jobs of run `run` (or the job whose submission id is `run`); returns the ids stopped."""
    jobs = client(address)
    ids = [
        job.submission_id
        for job in jobs.list_jobs()
        if str(job.status).rsplit(".", 1)[-1] in ACTIVE
        and ((job.metadata or {}).get(RUN_KEY) == run or job.submission_id == run)
    ]
    for job_id in ids:
        jobs.stop_job(job_id)
    return ids
