"""The `bwrap` backend: each command in a fresh bubblewrap sandbox over the shared read-only rootfs.

What a command sees: the rootfs of `sandbox.image` as a read-only `/`, its workspace at /workspace and its /tmp
(the only writable places, bound from the host workspace), a private /proc and a minimal /dev. `--unshare-all`
gives it new user, pid, network (loopback only, nothing of the host's), ipc, uts and cgroup namespaces;
`--disable-userns` stops it making more; `--die-with-parent` and `--new-session` tie it to this process and cut
it from our terminal. It runs as uid 65532 ("sandbox") inside, mapped to a host uid of its own when we are root
(so RLIMIT_NPROC, a per-uid count, caps this sandbox alone), with no capabilities.

Per-process rlimits (CPU seconds, file size, processes, address space) are set by the sandbox's bash before it
runs the command (BASH_ENV, see `sandbox.limits`). A command's processes cannot outlive it: when the command
exits, bwrap (pid 1 of the pid namespace) exits and the kernel kills everything left in the namespace; on timeout
we kill bwrap's process group.
Memory is capped per process (address space), not per sandbox: that needs the docker backend's cgroup.
"""

from __future__ import annotations

import os

from fieldkit.gym.records import ExecResult, WorkspaceSeed
from sandbox.base import WorkspaceSandbox, refuse_unrunnable
from sandbox.image import SANDBOX_UID, build_rootfs
from sandbox.limits import RLIMITS_SCRIPT_IN_IMAGE, SandboxLimits, rlimit_env
from sandbox.process import run_process

HOST_UID_BASE = 3_000_000  # host uid = base + workspace slot; far above login users and the usual subuid ranges
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/workspace", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}


class BwrapSandbox(WorkspaceSandbox):
    backend = "bwrap"

    def __init__(self, seed: WorkspaceSeed, limits: SandboxLimits) -> None:
        self.rootfs = build_rootfs()
        super().__init__(seed, limits)

    def _workspace_owner(self, slot: int) -> int | None:
        # Without root, bwrap runs as this user and maps it to the sandbox uid: the workspace needs no other owner.
        return HOST_UID_BASE + slot if os.geteuid() == 0 else None

    def _argv(self, command: str) -> list[str]:
        argv = [
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--ro-bind",
            str(self.rootfs),
            "/",
            "--bind",
            str(self.workspace.files),
            "/workspace",
            "--bind",
            str(self.workspace.tmp),
            "/tmp",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--chdir",
            "/workspace",
            "--clearenv",
        ]
        env = SANDBOX_ENV | rlimit_env(self.limits, RLIMITS_SCRIPT_IN_IMAGE, per_uid_processes=True, address_space=True)
        for name, value in env.items():
            argv += ["--setenv", name, value]
        return [*argv, "--", "/bin/bash", "-c", command]

    def exec(self, command: str, timeout: float) -> ExecResult:
        self._check_open()
        if refused := refuse_unrunnable(command):
            return refused
        if not self.is_alive():
            return ExecResult(exit_code=-1, error="bwrap sandbox is gone: its workspace or rootfs was removed")
        outcome = run_process(
            self._argv(command),
            timeout=timeout,
            output_cap=self.limits.output_cap_bytes,
            env=SANDBOX_ENV,  # not this process's environment: bwrap is pid 1 inside, its environ readable there
            user=self.workspace.owner_uid,
        )
        if outcome.returncode < 0 and not outcome.timed_out:
            # bwrap reports a command killed by signal N as exit 128+N; bwrap itself dying means it was killed.
            return outcome.result(-1, error=f"bwrap was killed from outside (signal {-outcome.returncode})")
        return outcome.result(outcome.returncode)

    def is_alive(self) -> bool:
        return super().is_alive() and self.rootfs.is_dir()
