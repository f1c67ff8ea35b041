"""The one Sandbox interface every backend implements, and the part the backends share: a host workspace.

A sandbox is a workspace seeded from a task (`WorkspaceSeed`), a way to run one shell command at a time in it
(`exec`), and a way to read the workspace back as data (`snapshot`) for a grader that may run on another node.
Each `exec` starts a fresh `bash -c COMMAND` with `/workspace` as its directory, as the reference harness did: the
working directory and shell variables do not carry over between commands, the files do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fieldkit.gym.records import ExecResult, WorkspaceSeed, WorkspaceSnapshot
from sandbox.limits import SandboxLimits
from sandbox.workspace import Workspace

DEFAULT_SNAPSHOT_CAP_BYTES = 1 << 20  # per file: ClawGym assertions read small text files
MAX_COMMAND_BYTES = 128 * 1024 - 1  # Linux refuses one exec argument longer than this (MAX_ARG_STRLEN)
UNRUNNABLE_EXIT_CODE = 126  # bash's code for "found but cannot execute"


def refuse_unrunnable(command: str) -> ExecResult | None:
    """The observation for a command no exec could start (too long, or with a NUL byte); None if it can run."""
    size = len(command.encode())
    if size > MAX_COMMAND_BYTES:
        problem = f"command is {size} bytes; one command may be at most {MAX_COMMAND_BYTES} bytes (write a file)"
    elif "\x00" in command:
        problem = "command contains a NUL byte"
    else:
        return None
    return ExecResult(exit_code=UNRUNNABLE_EXIT_CODE, stderr=f"sandbox: {problem}\n")


class SandboxError(RuntimeError):
    """The sandbox itself cannot be created or used (not a command's own failure, which is an ExecResult)."""


class Sandbox(ABC):
    """An isolated workspace that runs one shell command at a time. Not thread-safe: lease it to one user."""

    backend: str

    @abstractmethod
    def exec(self, command: str, timeout: float) -> ExecResult:
        """Run `bash -c command` in /workspace. On timeout every process of the command is killed and the result
        has exit code 124 and `timed_out`. A sandbox that fails underneath returns a result with `error` set."""

    @abstractmethod
    def snapshot(self, cap_bytes: int = DEFAULT_SNAPSHOT_CAP_BYTES) -> WorkspaceSnapshot:
        """The workspace as data: every path with its size, file bytes up to `cap_bytes`, symlinks as symlinks."""

    @abstractmethod
    def reset(self, seed: WorkspaceSeed) -> None:
        """Kill what still runs, empty the workspace and /tmp, and seed the workspace again."""

    @abstractmethod
    def close(self) -> None:
        """Release everything the sandbox holds. Idempotent."""

    @abstractmethod
    def is_alive(self) -> bool:
        """Whether the sandbox can still run commands."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkspaceSandbox(Sandbox):
    """A sandbox whose workspace is a host directory bound in (every backend here): seeding, wiping and
    snapshots are host-side file operations. Subclasses run commands and say how to stop leftover processes."""

    def __init__(self, seed: WorkspaceSeed, limits: SandboxLimits) -> None:
        self.limits = limits
        self.workspace = Workspace(limits.workspace_mb, self._workspace_owner)
        self.closed = False
        try:
            self.workspace.seed(seed)
        except BaseException:
            self.workspace.remove()
            raise

    def _workspace_owner(self, slot: int) -> int | None:
        """The host uid the commands run as (root hosts only), given the workspace's slot; None: this user."""
        return None

    def _stop_processes(self) -> None:
        """Kill whatever the sandbox still runs; backends whose commands cannot outlive `exec` need nothing."""

    def snapshot(self, cap_bytes: int = DEFAULT_SNAPSHOT_CAP_BYTES) -> WorkspaceSnapshot:
        self._check_open()
        return self.workspace.snapshot(cap_bytes)

    def reset(self, seed: WorkspaceSeed) -> None:
        self._check_open()
        self._stop_processes()
        self._clear()
        self.workspace.seed(seed)

    def _clear(self) -> None:
        """Empty the workspace and /tmp (host-side; a backend whose files are not ours to delete does more)."""
        self.workspace.wipe()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_processes()
            self.workspace.remove()

    def is_alive(self) -> bool:
        return not self.closed and self.workspace.files.is_dir()

    def _check_open(self) -> None:
        if self.closed:
            raise SandboxError(f"{self.backend} sandbox is closed")
