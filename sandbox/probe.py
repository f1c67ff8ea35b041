"""Which backends work on this machine, and why the others do not. Probed once per process."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
from collections.abc import Callable

from sandbox.base import SandboxError

BACKENDS = ("docker", "bwrap", "local")  # strongest first
ISOLATING = ("docker", "bwrap")  # what `auto` may pick, in this order: never `local`, which isolates nothing
BWRAP_PROBE_UID = 65_532  # probed as an unprivileged uid when root, as the bwrap backend runs its sandboxes


@functools.cache
def docker_problem() -> str | None:
    """None if a Docker engine answers; else why not."""
    try:
        import docker
    except ImportError:
        return "the `docker` Python package is not installed"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine answers ({exc.__class__.__name__}: {exc}); as root, `make dockerd` starts one"
    return None


@functools.cache
def bwrap_problem() -> str | None:
    """None if bubblewrap can create its namespaces here (as the uid it would run sandboxes as); else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    from sandbox.image import build_rootfs

    try:
        rootfs = str(build_rootfs())  # probe the mounts the sandboxes use (binding all of / trips on host mounts)
        probe = subprocess.run(
            ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/", "/bin/true"],
            capture_output=True,
            timeout=10,
            user=BWRAP_PROBE_UID if os.geteuid() == 0 else None,
        )
    except (OSError, subprocess.TimeoutExpired, SandboxError) as exc:
        return f"bwrap could not run: {exc}"
    if probe.returncode != 0:
        return f"bwrap cannot create namespaces here: {probe.stderr.decode(errors='replace').strip()}"
    return None


def backend_problem(name: str) -> str | None:
    probes: dict[str, Callable[[], str | None]] = {"docker": docker_problem, "bwrap": bwrap_problem}
    return probes[name]() if name in probes else None


def available_backends() -> list[str]:
    """The backends that work on this machine, strongest first (`local` always works)."""
    return [name for name in BACKENDS if backend_problem(name) is None]


def auto_backend() -> str | None:
    """The isolating backend `auto` picks here, or None when neither docker nor bubblewrap works."""
    return next((name for name in ISOLATING if backend_problem(name) is None), None)


def resolve_backend(name: str) -> str:
    """`auto` -> the strongest isolating backend, or SandboxError naming this machine and the fix when there is
    none (a pod without Docker or user namespaces must not silently run agents' commands unisolated); a named
    backend -> itself, or SandboxError saying why not."""
    if name == "auto":
        chosen = auto_backend()
        if chosen is None:
            why = "; ".join(f"{backend}: {backend_problem(backend)}" for backend in ISOLATING)
            raise SandboxError(
                f"no isolating sandbox backend on {socket.gethostname()} ({why}). Fix: start Docker or install "
                "bubblewrap on this node, or accept no isolation by saying so: sandbox.backend: local in the run "
                "config (--backend local on the command line)"
            )
        return chosen
    if name not in BACKENDS:
        raise ValueError(f"sandbox backend {name!r} is unknown; allowed: auto, {', '.join(BACKENDS)}")
    problem = backend_problem(name)
    if problem is not None:
        raise SandboxError(f"sandbox backend {name!r} is unavailable: {problem}")
    return name
