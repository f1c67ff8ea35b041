"""Sandbox cost: per-command overhead of each backend against a bare subprocess of the same command (p50/p99),
sandbox create and reset times, and the SandboxPool's command throughput with N concurrent leases against one.

The baseline is `bash -c COMMAND` run with subprocess, measured in this run. Goals from the issue: bwrap within
5 ms of it, docker within 60 ms.

Run: `python -m bench.sandbox_overhead [n_commands]` (default 60 per backend).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fieldkit.config import SandboxConfig
from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed

COMMAND = "cat notes.txt | wc -l"
SEED = WorkspaceSeed(
    files=[WorkspaceFile(path="notes.txt", content="line\n" * 100)]
    + [WorkspaceFile(path=f"src/module_{i}.py", content=f"x = {i}\n" * 20) for i in range(10)]
    + [WorkspaceFile(path="assets/blob.bin", kind="binary-stub", size=1 << 20)]
)
POOL_LEASES = 4
POOL_COMMANDS_PER_LEASE = 10


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return 1000 * statistics.median(samples), 1000 * cuts[98]


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def bare_subprocess(workdir: str, n: int) -> list[float]:
    def run() -> None:
        subprocess.run(["bash", "-c", COMMAND], cwd=workdir, capture_output=True, check=True)

    return timed(run, n)


def backend_figures(backend: str, n: int) -> dict[str, list[float]]:
    from sandbox import create_sandbox

    create = []
    for _ in range(3):
        start = time.perf_counter()
        box = create_sandbox(SEED, backend)
        create.append(time.perf_counter() - start)
        if len(create) < 3:
            box.close()
    box.exec(COMMAND, 10)  # warm caches
    execs = timed(lambda: box.exec(COMMAND, 10), n)
    resets = timed(lambda: box.reset(SEED), 5)
    workdir = str(box.workspace.files)  # type: ignore[attr-defined]
    bare = bare_subprocess(workdir, n)  # interleaved per backend, so load drift hits both alike
    box.close()
    return {"create": create, "exec": execs, "reset": resets, "bare": bare}


def pool_throughput(backend: str) -> tuple[float, float]:
    """Commands per second through the pool: one lease at a time, then POOL_LEASES leases at once."""
    import ray

    from services.sandbox_pool import SandboxPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = SandboxConfig(backend=backend, pool_size=POOL_LEASES, max_concurrent_execs=POOL_LEASES)  # type: ignore[arg-type]
        pool = SandboxPool.remote(cfg)  # type: ignore[attr-defined]
        ray.get(pool.ready.remote())

        def run(leases: int) -> float:
            ids = ray.get([pool.lease.remote(SEED) for _ in range(leases)])
            start = time.perf_counter()
            for _ in range(POOL_COMMANDS_PER_LEASE):
                ray.get([pool.exec.remote(lease, COMMAND, 10.0) for lease in ids])
            rate = leases * POOL_COMMANDS_PER_LEASE / (time.perf_counter() - start)
            ray.get([pool.release.remote(lease) for lease in ids])
            return rate

        run(1)  # warm up the actor's threads
        single, concurrent = run(1), run(POOL_LEASES)
        ray.get(pool.close.remote())
        return single, concurrent
    finally:
        ray.shutdown()


def main(n: int = 60) -> dict[str, float]:
    from sandbox import available_backends

    figures: dict[str, float] = {}
    print(f"sandbox overhead: `{COMMAND}`, {n} runs per backend; baseline: bare `bash -c` subprocess in the same run")
    print(
        f"{'backend':<8}{'p50 ms':>9}{'p99 ms':>9}{'bare p50':>10}{'+p50 ms':>9}{'+p99 ms':>9}{'ratio':>7}"
        f"{'create ms':>11}{'reset ms':>10}"
    )
    for backend in available_backends():
        got = backend_figures(backend, n)
        p50, p99 = percentiles_ms(got["exec"])
        bare50, bare99 = percentiles_ms(got["bare"])
        create_ms = 1000 * statistics.median(got["create"])
        reset_ms = 1000 * statistics.median(got["reset"])
        figures.update(
            {
                f"{backend}_exec_p50_ms": p50,
                f"{backend}_exec_p99_ms": p99,
                f"{backend}_bare_p50_ms": bare50,
                f"{backend}_overhead_p50_ms": p50 - bare50,
                f"{backend}_overhead_p99_ms": p99 - bare99,
                f"{backend}_vs_bare_p50": p50 / bare50,
                f"{backend}_create_ms": create_ms,
                f"{backend}_reset_ms": reset_ms,
            }
        )
        print(
            f"{backend:<8}{p50:>9.1f}{p99:>9.1f}{bare50:>10.1f}{p50 - bare50:>9.1f}{p99 - bare99:>9.1f}"
            f"{p50 / bare50:>7.2f}{create_ms:>11.0f}{reset_ms:>10.1f}"
        )
    best = available_backends()[0]
    single, concurrent = pool_throughput(best)
    figures.update(
        {
            "pool_cmds_per_s_1_lease": single,
            f"pool_cmds_per_s_{POOL_LEASES}_leases": concurrent,
            "pool_concurrency_speedup": concurrent / single,
        }
    )
    print(
        f"pool ({best}): {single:.1f} commands/s with 1 lease, {concurrent:.1f} with {POOL_LEASES} at once "
        f"(x{concurrent / single:.2f})"
    )
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
