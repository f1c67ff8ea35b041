"""What a sandbox may use, and how the per-process limits are applied inside it.

The rlimits are set by the sandbox's own bash before it runs the command: bash sources the script named by
BASH_ENV (`RLIMITS_SCRIPT`, shipped in the image) in every non-interactive shell, and that script applies the
limits given in FIELDKIT_* variables with `ulimit -H -S`, then unsets them all. So the command itself runs as a
plain `bash -c COMMAND` with no second shell in front. Not a Python `preexec_fn`: that is unsafe in a threaded
process such as the pool actor. Lowering a limit needs no privilege, and the command cannot raise a hard one.
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


RLIMITS_SCRIPT = """\
# Sourced by bash through BASH_ENV before a sandboxed command: its rlimits, hard and soft, then nothing left over.
ulimit -H -S -t "$FIELDKIT_CPU_S" -f "$FIELDKIT_FSIZE_KB" ${FIELDKIT_NPROC:+-u "$FIELDKIT_NPROC"} \\
  ${FIELDKIT_AS_KB:+-v "$FIELDKIT_AS_KB"} || exit 125
unset BASH_ENV FIELDKIT_CPU_S FIELDKIT_FSIZE_KB FIELDKIT_NPROC FIELDKIT_AS_KB
"""
RLIMITS_SCRIPT_IN_IMAGE = "/etc/fieldkit/rlimits.sh"


def rlimit_env(limits: SandboxLimits, script: str, *, per_uid_processes: bool, address_space: bool) -> dict[str, str]:
    """Environment that makes bash apply the limits (script: where RLIMITS_SCRIPT lies, as the shell sees it).

    per_uid_processes: set RLIMIT_NPROC (only where the sandbox has a uid of its own; docker uses its pids cgroup).
    address_space: set RLIMIT_AS to the memory limit (where no memory cgroup holds the sandbox).
    """
    env = {
        "BASH_ENV": script,
        "FIELDKIT_CPU_S": str(limits.cpu_seconds),
        "FIELDKIT_FSIZE_KB": str(limits.workspace_mb * 1024),
    }
    if per_uid_processes:
        env["FIELDKIT_NPROC"] = str(limits.pids)
    if address_space:
        env["FIELDKIT_AS_KB"] = str(limits.memory_mb * 1024)
    return env
