"""SandboxPool: the Ray actor that keeps warm sandboxes on its node and leases them to rollout workers.

A rollout worker calls `lease(seed)` and gets a lease id for a sandbox reset to that seed, then `exec` and
`snapshot` through the pool (the sandbox lives in this actor's process), then `release(lease)`. A released
sandbox is health-checked and wiped in the background before it goes back to the idle set; one that died, or
whose exec reported a sandbox fault (`ExecResult.error`), is closed and replaced. At most
`sandbox.max_concurrent_execs` commands run at once per pool (per host); `sandbox.pool_size` sandboxes exist.

Metrics (ray.util.metrics, on the Ray dashboard's Prometheus endpoint), tagged by backend and node:
`fieldkit_sandbox_leased` and `fieldkit_sandbox_idle` (gauges), `fieldkit_sandbox_replaced_total` (counter),
`fieldkit_sandbox_exec_latency_s` (histogram). `stats()` returns the same numbers as a record.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from pydantic import BaseModel

from fieldkit.config import SandboxConfig
from fieldkit.gym.records import ExecResult, WorkspaceSeed, WorkspaceSnapshot
from sandbox import Sandbox, SandboxLimits, create_sandbox, reap_stale, resolve_backend
from services.logs import capture_actor_output

log = logging.getLogger(__name__)

EMPTY = WorkspaceSeed()
HEALTH_INTERVAL_S = 30.0  # idle sandboxes are probed this often; leased ones are checked on every release
LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class PoolStats(BaseModel):
    backend: str
    node_id: str
    size: int
    leased: int
    idle: int
    replaced: int
    execs: int
    exec_errors: int


@dataclass
class Lease:
    sandbox: Sandbox
    owner: str | None = None  # the actor holding it, so a restarted one can give back what it held before dying
    faulted: bool = False  # an exec reported a sandbox fault: replace instead of recycling


@ray.remote(num_cpus=0)
class SandboxPool:
    def __init__(self, cfg: SandboxConfig) -> None:
        capture_actor_output("sandbox-pool")
        self.cfg = cfg
        self.limits = SandboxLimits.from_config(cfg)
        self.backend = resolve_backend(cfg.backend)
        self.node_id = ray.get_runtime_context().get_node_id()
        stale = reap_stale()
        if any(stale.values()):
            log.warning("sandbox pool reaped what a dead owner left: %s", stale)
        self.idle: list[Sandbox] = []
        self.leases: dict[str, Lease] = {}
        self.pending = 0  # sandboxes being created, recycled or replaced: they count toward pool_size
        self.available = asyncio.Condition()
        self.exec_slots = asyncio.Semaphore(cfg.max_concurrent_execs)
        self.lease_ids = itertools.count()
        self.counts = {"replaced": 0, "execs": 0, "exec_errors": 0}
        self.health_task: asyncio.Task[None] | None = None
        self.metrics = _Metrics(self.backend, self.node_id)

    async def ready(self) -> PoolStats:
        """Create the warm sandboxes (pool_size, all at once) and start the idle health checks."""
        missing = self.cfg.pool_size - len(self.idle) - len(self.leases) - self.pending
        await asyncio.gather(*(self._spawn() for _ in range(missing)))
        self._start_health_checks()
        return self.stats()

    async def lease(self, seed: WorkspaceSeed, wait_s: float | None = None, owner: str | None = None) -> str:
        """A sandbox reset to `seed`; waits for one to come free (at most `wait_s`, else TimeoutError)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        self._start_health_checks()  # a pool used without ready() fills lazily, and is checked all the same
        while True:
            sandbox = await self._take_idle(deadline)
            try:
                await asyncio.to_thread(sandbox.reset, seed)
            except ValueError:  # the seed itself is bad (too large): the sandbox is fine
                self._return_idle(sandbox)
                raise
            except Exception as exc:
                log.warning("sandbox failed its reset at lease (%s); replacing it", exc)
                self._replace_in_background(sandbox)
                continue
            lease_id = f"{self.node_id[:8]}-{next(self.lease_ids)}"
            self.leases[lease_id] = Lease(sandbox, owner)
            self._publish()
            return lease_id

    async def exec(self, lease_id: str, command: str, timeout: float) -> ExecResult:
        lease = self._lease(lease_id)
        async with self.exec_slots:
            result = await asyncio.to_thread(lease.sandbox.exec, command, timeout)
        self.counts["execs"] += 1
        self.metrics.exec_latency.observe(result.duration_s)
        if result.error is not None:
            lease.faulted = True
            self.counts["exec_errors"] += 1
        return result

    async def snapshot(self, lease_id: str, cap_bytes: int | None = None) -> WorkspaceSnapshot:
        sandbox = self._lease(lease_id).sandbox
        cap = self.cfg.snapshot_cap_bytes if cap_bytes is None else cap_bytes
        return await asyncio.to_thread(sandbox.snapshot, cap)

    async def release(self, lease_id: str) -> None:
        """Give a sandbox back; it is wiped (or replaced) in the background. Releasing twice is harmless."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return
        self._publish()
        self.pending += 1
        asyncio.get_running_loop().create_task(self._recycle(lease))

    async def release_owner(self, owner: str) -> int:
        """Give back every lease `owner` holds: what a rollout worker that died mid-episode left. Returns how many."""
        held = [lease_id for lease_id, lease in self.leases.items() if lease.owner == owner]
        for lease_id in held:
            await self.release(lease_id)
        return len(held)

    async def check_health(self) -> int:
        """Probe the idle sandboxes and replace the dead ones (runs every HEALTH_INTERVAL_S). Returns how many."""
        dead = [sandbox for sandbox in list(self.idle) if not await asyncio.to_thread(sandbox.is_alive)]
        for sandbox in dead:
            if sandbox in self.idle:
                self.idle.remove(sandbox)
                self._replace_in_background(sandbox)
        self._publish()
        return len(dead)

    def stats(self) -> PoolStats:
        return PoolStats(
            backend=self.backend,
            node_id=self.node_id,
            size=len(self.idle) + len(self.leases) + self.pending,
            leased=len(self.leases),
            idle=len(self.idle),
            **self.counts,
        )

    def describe_lease(self, lease_id: str) -> dict[str, Any]:
        """Where a leased sandbox lives on the host (for operators and the fault-injection tests)."""
        sandbox: Any = self._lease(lease_id).sandbox
        container = getattr(sandbox, "container", None)
        return {
            "backend": sandbox.backend,
            "workspace": str(sandbox.workspace.root),
            "container_id": container.id if container is not None else None,
        }

    async def close(self) -> None:
        """Close every sandbox (idle and leased). Call before killing the actor: ray.kill skips cleanup."""
        if self.health_task is not None:
            self.health_task.cancel()
        sandboxes = self.idle + [lease.sandbox for lease in self.leases.values()]
        self.idle, self.leases = [], {}
        await asyncio.gather(*(asyncio.to_thread(s.close) for s in sandboxes))
        self._publish()

    def __ray_shutdown__(self) -> None:
        for sandbox in self.idle + [lease.sandbox for lease in self.leases.values()]:
            sandbox.close()

    # --- internals --------------------------------------------------------------------------------------------

    def _lease(self, lease_id: str) -> Lease:
        try:
            return self.leases[lease_id]
        except KeyError:
            raise KeyError(f"sandbox lease {lease_id!r} is unknown or already released") from None

    async def _take_idle(self, deadline: float | None) -> Sandbox:
        async with self.available:
            while not self.idle:
                if len(self.leases) + self.pending < self.cfg.pool_size:  # room: grow toward pool_size
                    self._spawn()
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError(f"no sandbox came free; all {self.cfg.pool_size} are leased or starting")
                try:
                    await asyncio.wait_for(self.available.wait(), wait)
                except TimeoutError:
                    continue
            return self.idle.pop()

    def _return_idle(self, sandbox: Sandbox) -> None:
        self.idle.append(sandbox)
        self._publish()
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.available:
            self.available.notify()

    def _spawn(self) -> asyncio.Task[None]:
        """Start creating one sandbox. Counted in `pending` at once, so concurrent waiters do not overshoot."""
        self.pending += 1
        return asyncio.get_running_loop().create_task(self._add_new())

    async def _add_new(self) -> None:
        try:
            sandbox = await asyncio.to_thread(create_sandbox, EMPTY, self.backend, self.limits)
        except Exception as exc:
            log.error("could not create a %s sandbox: %s", self.backend, exc)
            await asyncio.sleep(1.0)  # do not spin while the engine is down
            self.pending -= 1
            await self._notify()  # a waiting lease retries the creation
            return
        self.pending -= 1
        self._return_idle(sandbox)

    async def _recycle(self, lease: Lease) -> None:
        """Runs with `pending` already counting this sandbox."""
        healthy = not lease.faulted and await asyncio.to_thread(lease.sandbox.is_alive)
        if healthy:
            try:
                await asyncio.to_thread(lease.sandbox.reset, EMPTY)
            except Exception as exc:
                log.warning("sandbox failed its reset at release (%s); replacing it", exc)
                healthy = False
        self.pending -= 1
        if healthy:
            self._return_idle(lease.sandbox)
        else:
            self._replace_in_background(lease.sandbox)

    def _replace_in_background(self, sandbox: Sandbox) -> None:
        self.counts["replaced"] += 1
        self.metrics.replaced.inc()
        asyncio.get_running_loop().create_task(asyncio.to_thread(sandbox.close))
        self._spawn()

    def _start_health_checks(self) -> None:
        if self.health_task is None:
            self.health_task = asyncio.get_running_loop().create_task(self._health_loop())

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await self.check_health()

    def _publish(self) -> None:
        self.metrics.leased.set(len(self.leases))
        self.metrics.idle.set(len(self.idle))


class _Metrics:
    def __init__(self, backend: str, node_id: str) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = {"backend": backend, "node": node_id[:12]}
        keys = tuple(tags)
        self.leased = Gauge("fieldkit_sandbox_leased", "sandboxes leased to rollout workers", tag_keys=keys)
        self.idle = Gauge("fieldkit_sandbox_idle", "warm sandboxes waiting for a lease", tag_keys=keys)
        self.replaced = Counter("fieldkit_sandbox_replaced_total", "sandboxes found dead and replaced", keys)
        self.exec_latency = Histogram(
            "fieldkit_sandbox_exec_latency_s", "wall time of one command", LATENCY_BOUNDARIES_S, tag_keys=keys
        )
        for metric in (self.leased, self.idle, self.replaced, self.exec_latency):
            metric.set_default_tags(tags)


def pool_name(node_id: str) -> str:
    return f"fieldkit-sandbox-pool-{node_id}"


def start_pools(cfg: SandboxConfig) -> dict[str, Any]:
    """One warmed-up pool per alive node, pinned to it and named after it (see `pool_on_this_node`)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    on_node = {node: NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes}
    try:  # each node's own answer, first: a node without isolation stops the run here with its reason
        backends = ray.get([_backend_here.options(scheduling_strategy=on_node[n]).remote(cfg.backend) for n in nodes])
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None  # the SandboxError naming the node and the fix, without Ray's remote traceback
    pools = {
        node: SandboxPool.options(  # type: ignore[attr-defined]
            name=pool_name(node), get_if_exists=True, scheduling_strategy=on_node[node]
        ).remote(cfg.model_copy(update={"backend": backend}))
        for node, backend in zip(nodes, backends, strict=True)
    }
    ray.get([pool.ready.remote() for pool in pools.values()])
    return pools


@ray.remote(num_cpus=0)
def _backend_here(name: str) -> str:
    return resolve_backend(name)


def pool_on_this_node() -> Any:
    """The pool `start_pools` started on the node this task or actor runs on."""
    return ray.get_actor(pool_name(ray.get_runtime_context().get_node_id()))
