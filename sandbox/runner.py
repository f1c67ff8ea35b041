"""Oracle runs over real sandboxes: the `Runner` that fieldkit.gym takes to prove tasks and record transcripts."""

from __future__ import annotations

from fieldkit.gym.oracle import OracleRun, Runner
from fieldkit.gym.records import WorkspaceSeed
from sandbox import create_sandbox, resolve_backend


def oracle_runner(backend: str = "auto", timeout_s: float = 10.0) -> Runner:
    """A fresh sandbox per call: seeded, each command run in order, snapshot, closed. Thread-safe."""
    resolved = resolve_backend(backend)  # fail once, here, when the backend cannot run on this machine

    def run(seed: WorkspaceSeed, commands: list[str]) -> OracleRun:
        with create_sandbox(seed, backend=resolved) as box:
            results = [box.exec(command, timeout_s) for command in commands]
            return OracleRun(results=results, snapshot=box.snapshot())

    return run
