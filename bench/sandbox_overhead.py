"""Sandbox cost: per-command overhead of each backend against a bare subprocess of the same command (p50/p99),
sandbox create and reset times, and the SandboxPool's command throughput with N concurrent leases against one.

The baseline is `bash -c COMMAND` run with subprocess, measured in this run. Goals from the issue: bwrap within
5 ms of it, docker within 60 ms. Wall times on a loaded machine mostly measure waiting for a CPU (a sandboxed
command is several processes, each woken in turn), so the table also gives the CPU time the command's processes
used (user + system of our children: bare, bwrap and local; docker's run under the engine, not under us).

Run: `python -m bench.sandbox_overhead [n_commands]` (default 60 per backend).
"""

from __future__ import annotations

import resource
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


def children_cpu_ms(fn: Callable[[], Any], n: int) -> float:
    """Mean user + system CPU of the child processes one call of fn runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / n


def backend_figures(backend: str, n: int) -> dict[str, float]:
    from sandbox import create_sandbox

    create = []
    for _ in range(3):
        start = time.perf_counter()
        box = create_sandbox(SEED, backend)
        create.append(time.perf_counter() - start)
        if len(create) < 3:
            box.close()
    workdir = str(box.workspace.files)  # type: ignore[attr-defined]

    def sandboxed() -> None:
        box.exec(COMMAND, 10)

    def bare() -> None:
        subprocess.run(["bash", "-c", COMMAND], cwd=workdir, capture_output=True, check=True)

    sandboxed()  # warm caches
    p50, p99 = percentiles_ms(timed(sandboxed, n))
    bare50, bare99 = percentiles_ms(timed(bare, n))  # beside each backend, so load drift hits both alike
    figures = {
        "exec_p50_ms": p50,
        "exec_p99_ms": p99,
        "bare_p50_ms": bare50,
        "overhead_p50_ms": p50 - bare50,
        "overhead_p99_ms": p99 - bare99,
        "vs_bare_p50": p50 / bare50,
        "cpu_ms": children_cpu_ms(sandboxed, n),
        "bare_cpu_ms": children_cpu_ms(bare, n),
        "create_ms": 1000 * statistics.median(create),
        "reset_ms": 1000 * statistics.median(timed(lambda: box.reset(SEED), 5)),
    }
    box.close()
    return figures


def pool_throughput(backend: str) -> tuple[float, float]:
    """Commands per second through the pool: one lease at a time, then POOL_LEASES leases at once."""
    import ray

    from services.sandbox_pool import SandboxPool

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = SandboxConfig.model_validate(
            {"backend": backend, "pool_size": POOL_LEASES, "max_concurrent_execs": POOL_LEASES}
        )
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


COLUMNS = [  # (figure, header, format)
    ("exec_p50_ms", "p50 ms", ".1f"),
    ("exec_p99_ms", "p99 ms", ".1f"),
    ("bare_p50_ms", "bare p50", ".1f"),
    ("overhead_p50_ms", "+p50 ms", ".1f"),
    ("overhead_p99_ms", "+p99 ms", ".1f"),
    ("vs_bare_p50", "ratio", ".2f"),
    ("cpu_ms", "cpu ms", ".1f"),
    ("bare_cpu_ms", "bare cpu", ".1f"),
    ("create_ms", "create ms", ".0f"),
    ("reset_ms", "reset ms", ".1f"),
]


def main(n: int = 60) -> dict[str, float]:
    from sandbox import available_backends

    print(f"sandbox overhead: `{COMMAND}`, {n} runs per backend; baseline: bare `bash -c` subprocess in the same run")
    print(f"{'backend':<8}" + "".join(f"{header:>10}" for _, header, _ in COLUMNS))
    figures: dict[str, float] = {}
    for backend in available_backends():
        got = backend_figures(backend, n)
        if backend == "docker":
            got["cpu_ms"] = float("nan")  # its processes are the engine's children, not ours
        print(f"{backend:<8}" + "".join(f"{got[key]:>10{fmt}}" for key, _, fmt in COLUMNS))
        figures.update({f"{backend}_{key}": value for key, value in got.items()})
    best = available_backends()[0]
    single, concurrent = pool_throughput(best)
    figures |= {
        "pool_cmds_per_s_1_lease": single,
        f"pool_cmds_per_s_{POOL_LEASES}_leases": concurrent,
        "pool_concurrency_speedup": concurrent / single,
    }
    print(
        f"pool ({best}): {single:.1f} commands/s with 1 lease, {concurrent:.1f} with {POOL_LEASES} at once "
        f"(x{concurrent / single:.2f})"
    )
    return figures


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
