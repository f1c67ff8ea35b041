"""Sandboxes: one interface, backends docker / bubblewrap / local. Never imports Ray.

`create_sandbox(seed)` picks the strongest isolating backend this machine runs (`auto`: docker if an engine answers,
else bubblewrap if it can create namespaces here, else a SandboxError naming the fix). The non-isolating local
backend runs only when asked for by name.
"""

from __future__ import annotations

from fieldkit.gym.records import WorkspaceSeed
from sandbox.base import DEFAULT_SNAPSHOT_CAP_BYTES, Sandbox, SandboxError
from sandbox.limits import SandboxLimits
from sandbox.probe import BACKENDS, available_backends, resolve_backend

__all__ = [
    "BACKENDS",
    "DEFAULT_SNAPSHOT_CAP_BYTES",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "available_backends",
    "create_sandbox",
    "reap_stale",
    "resolve_backend",
]


def create_sandbox(seed: WorkspaceSeed, backend: str = "auto", limits: SandboxLimits | None = None) -> Sandbox:
    """A new sandbox with `seed` written into its workspace. backend: auto | docker | bwrap | local."""
    limits = limits or SandboxLimits()
    name = resolve_backend(backend)
    if name == "docker":
        from sandbox.container import DockerSandbox

        return DockerSandbox(seed, limits)
    if name == "bwrap":
        from sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(seed, limits)
    from sandbox.local import LocalSandbox

    return LocalSandbox(seed, limits)


def reap_stale() -> dict[str, int]:
    """Remove what crashed sandbox owners left behind: their containers and their (mounted) workspaces."""
    from sandbox.probe import docker_problem
    from sandbox.workspace import reap_stale_workspaces

    containers = 0
    if docker_problem() is None:
        from sandbox.container import reap_stale_containers

        containers = reap_stale_containers()
    return {"containers": containers, "workspaces": len(reap_stale_workspaces())}
