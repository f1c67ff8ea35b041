"""What a sandbox may use, and the shell line that applies the per-process limits inside it.

The rlimits are set by the sandbox's own bash (`ulimit`, hard and soft) before it runs the command, rather than
in a Python `preexec_fn`, which is unsafe in a threaded process such as the pool actor. Lowering a limit needs
no privilege, and the command cannot raise a hard limit again.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fieldkit.config import SandboxConfig


class SandboxLimits(BaseModel):
    """What one sandbox may use. Defaults match `SandboxConfig`; `from_config` is the usual way to build one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    memory_mb: int = Field(512, ge=16, description="memory (docker: cgroup; bwrap/local: address space per process)")
    pids: int = Field(128, ge=8, description="processes (docker: pids cgroup; bwrap: RLIMIT_NPROC of its own uid)")
    cpu_seconds: int = Field(60, ge=1, description="CPU time per process (RLIMIT_CPU)")
    cpus: float = Field(1.0, gt=0, description="CPU share of a docker sandbox (cores)")
    workspace_mb: int = Field(64, ge=1, description="size of the writable workspace and /tmp together")
    output_cap_bytes: int = Field(1 << 20, ge=1024, description="bytes kept per output stream; the rest is dropped")

    @classmethod
    def from_config(cls, cfg: SandboxConfig) -> SandboxLimits:
        return cls(
            memory_mb=cfg.memory_mb,
            pids=cfg.pids,
            cpu_seconds=cfg.cpu_seconds,
            cpus=cfg.cpus,
            workspace_mb=cfg.workspace_mb,
            output_cap_bytes=cfg.output_cap_bytes,
        )


def bash_argv(
    command: str, limits: SandboxLimits, *, per_uid_processes: bool, address_space: bool, then: str = ""
) -> list[str]:
    """argv running `command` under bash with the limits applied.

    per_uid_processes: set RLIMIT_NPROC (only where the sandbox has a uid of its own; docker uses its pids cgroup).
    address_space: set RLIMIT_AS to the memory limit (where no memory cgroup holds the sandbox).
    then: shell run after the command with its exit status in $rc (docker kills what the command left running).
    """
    flags = [f"-t {limits.cpu_seconds}", f"-f {limits.workspace_mb * 1024}"]
    if per_uid_processes:
        flags.append(f"-u {limits.pids}")
    if address_space:
        flags.append(f"-v {limits.memory_mb * 1024}")
    ulimit = f"ulimit -H -S {' '.join(flags)} || exit 125"
    # With `then`, the wrapper outlives the command; its own stderr goes to /dev/null so that it does not add
    # "line 1: 26 Killed ..." job reports to the command's output (the command keeps the real stderr, fd 3).
    run = (
        f'exec 3>&2 2>/dev/null; /bin/bash -c "$1" 2>&3 3>&-; rc=$?; {then}; exit $rc'
        if then
        else 'exec /bin/bash -c "$1"'
    )
    return ["/bin/bash", "-c", f"{ulimit}; {run}", "sandbox", command]
