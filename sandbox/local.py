"""The `local` backend: a plain subprocess in a temp dir. It does NOT isolate anything.

For machines with neither a Docker engine nor bubblewrap. Commands run as this process's user with the host's
tools, network and files in reach; only the wall timeout (the process group is killed), the output caps and the
per-process rlimits hold. `auto` never picks it while an isolating backend works, and creating one logs a warning.
"""

from __future__ import annotations

import functools
import logging
import os

from fieldkit.gym.records import ExecResult, WorkspaceSeed
from fieldkit.runs import atomic_write_bytes
from sandbox.base import WorkspaceSandbox, refuse_unrunnable
from sandbox.image import cache_dir
from sandbox.limits import RLIMITS_SCRIPT, SandboxLimits, rlimit_env
from sandbox.process import run_process

log = logging.getLogger(__name__)

HOST_PATH = "/usr/local/bin:/usr/bin:/bin"  # the system tools, not this interpreter's virtualenv or pyenv shims


class LocalSandbox(WorkspaceSandbox):
    backend = "local"

    def __init__(self, seed: WorkspaceSeed, limits: SandboxLimits) -> None:
        log.warning(
            "sandbox backend 'local' does NOT isolate: commands run as uid %d with this host's files and network. "
            "Install bubblewrap or start a Docker engine before pointing a model at it.",
            os.getuid(),
        )
        super().__init__(seed, limits)

    def exec(self, command: str, timeout: float) -> ExecResult:
        self._check_open()
        if refused := refuse_unrunnable(command):
            return refused
        env = {
            "PATH": HOST_PATH,
            "HOME": str(self.workspace.files),
            "TMPDIR": str(self.workspace.tmp),
            "LANG": "C.UTF-8",
        } | rlimit_env(self.limits, host_rlimits_script(), per_uid_processes=False, address_space=True)
        outcome = run_process(
            ["/bin/bash", "-c", command],
            timeout=timeout,
            output_cap=self.limits.output_cap_bytes,
            cwd=str(self.workspace.files),
            env=env,
        )
        # bash execs a lone simple command, so a negative code is the command itself dying of a signal: report
        # it as bash would (128 + signal), as the isolating backends do.
        return outcome.result(outcome.returncode if outcome.returncode >= 0 else 128 - outcome.returncode)


@functools.cache
def host_rlimits_script() -> str:
    """RLIMITS_SCRIPT as a host file (the isolating backends have it in their image), written once."""
    path = cache_dir() / "rlimits.sh"
    if not path.exists() or path.read_text() != RLIMITS_SCRIPT:
        atomic_write_bytes(path, RLIMITS_SCRIPT.encode())  # a staging name of its own: two writers may race here
    return str(path)
