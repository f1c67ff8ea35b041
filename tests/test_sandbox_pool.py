"""SandboxPool on a real local Ray cluster, over each isolating backend: leases, reset on return, waiting,
health checks, and recovery from a sandbox killed from outside in the middle of a command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from conftest import kill_sandbox_from_outside, require_sandbox_backend

from fieldkit.config import SandboxConfig
from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed

pytestmark = [pytest.mark.sandbox, pytest.mark.ray]

SEED_A = WorkspaceSeed(files=[WorkspaceFile(path="a.txt", content="task A\n")])
SEED_B = WorkspaceSeed(files=[WorkspaceFile(path="b/b.txt", content="task B\n")])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never join another cluster
    yield
    ray.shutdown()


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def pool(request: pytest.FixtureRequest, ray_cluster: None) -> Iterator[Any]:
    from services.sandbox_pool import SandboxPool

    backend = require_sandbox_backend(request.param)
    cfg = SandboxConfig(backend=backend, pool_size=2, workspace_mb=8, max_concurrent_execs=2)  # type: ignore[arg-type]
    actor = SandboxPool.remote(cfg)  # type: ignore[attr-defined]
    stats = ray.get(actor.ready.remote())
    assert (stats.backend, stats.idle, stats.leased) == (backend, 2, 0)
    yield actor
    ray.get(actor.close.remote())
    ray.kill(actor)


def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_lease_exec_snapshot_release(pool: Any) -> None:
    lease = ray.get(pool.lease.remote(SEED_A))
    assert ray.get(pool.stats.remote()).leased == 1
    result = ray.get(pool.exec.remote(lease, "cat a.txt && echo done > out.txt", 10.0))
    assert (result.exit_code, result.stdout) == (0, "task A\n")
    snapshot = ray.get(pool.snapshot.remote(lease))
    assert snapshot.entry("out.txt").data == b"done\n"
    ray.get(pool.release.remote(lease))
    ray.get(pool.release.remote(lease))  # twice is harmless
    with pytest.raises(KeyError, match="unknown or already released"):
        ray.get(pool.exec.remote(lease, "true", 5.0))


def test_returned_sandbox_is_wiped_before_the_next_lease(pool: Any) -> None:
    leases = [ray.get(pool.lease.remote(SEED_A)) for _ in range(2)]
    ray.get([pool.exec.remote(lease, "echo secret > left-behind; echo t > /tmp/t", 10.0) for lease in leases])
    ray.get([pool.release.remote(lease) for lease in leases])
    leases = [ray.get(pool.lease.remote(SEED_B)) for _ in range(2)]  # both sandboxes, each used before
    for lease in leases:
        paths = [e.path for e in ray.get(pool.snapshot.remote(lease)).entries]
        assert paths == ["b", "b/b.txt"]
        assert ray.get(pool.exec.remote(lease, "ls -A /tmp", 10.0)).stdout == ""
    ray.get([pool.release.remote(lease) for lease in leases])


def test_lease_waits_for_a_free_sandbox(pool: Any) -> None:
    held = [ray.get(pool.lease.remote(SEED_A)) for _ in range(2)]
    with pytest.raises(TimeoutError, match="no sandbox came free"):
        ray.get(pool.lease.remote(SEED_A, 0.5))
    waiting = pool.lease.remote(SEED_B, 60.0)
    ray.get(pool.release.remote(held.pop()))
    third = ray.get(waiting)
    assert ray.get(pool.exec.remote(third, "cat b/b.txt", 10.0)).stdout == "task B\n"
    ray.get([pool.release.remote(lease) for lease in [*held, third]])


def test_bad_seed_is_refused_and_the_sandbox_kept(pool: Any) -> None:
    huge = WorkspaceSeed(files=[WorkspaceFile(path="big.bin", kind="binary-stub", size=64 << 20)])
    with pytest.raises(ValueError, match="workspace limit"):
        ray.get(pool.lease.remote(huge))
    stats = ray.get(pool.stats.remote())
    assert (stats.size, stats.leased) == (2, 0)


def test_sandbox_killed_mid_command_is_reported_and_replaced(pool: Any) -> None:
    before = ray.get(pool.stats.remote())
    lease = ray.get(pool.lease.remote(SEED_A))
    where = ray.get(pool.describe_lease.remote(lease))
    running = pool.exec.remote(lease, "echo started > started; sleep 30", 60.0)
    wait_for(lambda: (Path(where["workspace"]) / "files" / "started").exists(), "the command to start")
    kill_sandbox_from_outside(where)
    result = ray.get(running, timeout=30)
    assert result.error is not None and result.exit_code == -1 and not result.timed_out, result
    ray.get(pool.release.remote(lease))
    wait_for(lambda: ray.get(pool.stats.remote()).idle == 2, "the replacement sandbox")
    after = ray.get(pool.stats.remote())
    assert (after.replaced, after.exec_errors) == (before.replaced + 1, before.exec_errors + 1)
    fresh = [ray.get(pool.lease.remote(SEED_B)) for _ in range(2)]
    assert all(ray.get(pool.exec.remote(lease, "cat b/b.txt", 10.0)).stdout == "task B\n" for lease in fresh)
    ray.get([pool.release.remote(lease) for lease in fresh])


def test_health_check_replaces_a_dead_idle_sandbox(pool: Any) -> None:
    lease = ray.get(pool.lease.remote(SEED_A))
    where = ray.get(pool.describe_lease.remote(lease))
    ray.get(pool.release.remote(lease))
    wait_for(lambda: ray.get(pool.stats.remote()).idle == 2, "the release")
    replaced = ray.get(pool.stats.remote()).replaced
    kill_sandbox_from_outside(where)  # idle: a container killed, or a bwrap workspace lost
    assert ray.get(pool.check_health.remote()) == 1
    wait_for(lambda: ray.get(pool.stats.remote()).idle == 2, "the replacement sandbox")
    assert ray.get(pool.stats.remote()).replaced == replaced + 1


def test_pools_per_node_are_found_from_a_task(ray_cluster: None) -> None:
    from services.sandbox_pool import start_pools

    cfg = SandboxConfig(backend="local", pool_size=1)  # the placement is under test here, not isolation
    pools = start_pools(cfg)
    assert list(pools) == [node["NodeID"] for node in ray.nodes() if node["Alive"]]

    @ray.remote(num_cpus=0)
    def lease_here() -> str:
        from services.sandbox_pool import pool_on_this_node

        local = pool_on_this_node()
        lease = ray.get(local.lease.remote(SEED_A))
        out = ray.get(local.exec.remote(lease, "cat a.txt", 10.0)).stdout
        ray.get(local.release.remote(lease))
        return out

    assert ray.get(lease_here.remote()) == "task A\n"
    for actor in pools.values():
        ray.get(actor.close.remote())
        ray.kill(actor)


def test_a_node_without_isolation_refuses_to_start_its_pool(tmp_path: Path) -> None:
    """`auto` never falls back to `local`: a node with neither Docker nor bubblewrap stops the run, named. The node is
    a Ray cluster of its own, started in a process whose PATH lacks bwrap and whose DOCKER_HOST answers nothing."""
    no_bwrap = tmp_path / "bin"  # this machine's PATH as a node without bubblewrap installed
    no_bwrap.mkdir()
    for directory in dict.fromkeys(os.environ["PATH"].split(os.pathsep)):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if tool.name != "bwrap" and not (no_bwrap / tool.name).exists():
                (no_bwrap / tool.name).symlink_to(tool)
    node = """
import ray
from fieldkit.config import SandboxConfig
from sandbox import SandboxError
from services.sandbox_pool import start_pools
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    start_pools(SandboxConfig(backend="auto", pool_size=1))
except SandboxError as exc:
    print("refused:", exc)
"""
    env = {**os.environ, "PATH": str(no_bwrap), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    run = subprocess.run([sys.executable, "-c", node], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    refusal = f"refused: no isolating sandbox backend on {socket.gethostname()} "
    assert refusal in run.stdout and "bubblewrap is not installed" in run.stdout, run.stdout
    assert "sandbox.backend: local" in run.stdout and "Traceback" not in run.stdout
