"""The `docker` backend: one long-lived container per sandbox, one `docker exec` per command (the Docker SDK).

The container: the FROM-scratch image of `sandbox.image` (built offline on first use), network `none`, read-only
root, `cap-drop ALL`, `no-new-privileges`, a pids limit, a memory limit with no swap, a CPU share, and the host
workspace bound at /workspace and /tmp (the only writable places; a size-limited tmpfs on the host when root).
Its pid 1 is Docker's init (tini, reaps orphans) over `sleep infinity`, run as uid 65533 ("keepalive").
Commands run as uid 65532 ("sandbox"), which cannot signal uid 65533: after each command the wrapper shell runs
`kill -KILL -1`, ending everything the command left behind (background jobs, `setsid` escapees) while the
container lives on. On timeout the same kill is sent from a second exec, which ends the first one: the command is
really stopped, and exec returns exit 124.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path

from fieldkit.gym.records import ExecResult, WorkspaceSeed
from sandbox.base import SandboxError, WorkspaceSandbox, refuse_unrunnable
from sandbox.image import KEEPALIVE_UID, SANDBOX_UID, ensure_image
from sandbox.limits import RLIMITS_SCRIPT_IN_IMAGE, SandboxLimits, rlimit_env
from sandbox.process import CappedStream, ProcessOutcome
from sandbox.workspace import process_identity

KILL_ALL = "kill -KILL -1 2>/dev/null"  # every process of the sandbox uid but the caller; never the keepalive uid
DEATH_WATCH_S = 0.5  # how long a command killed by a signal waits to learn whether its container died too
KILL_TIMEOUT_S = 5.0  # the kill exec gets this long before the container is restarted instead
LABEL = "fieldkit.sandbox"  # value: the workspace slot
OWNER_LABEL = "fieldkit.sandbox.owner"  # value: "pid starttime" of the process that created the container
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"


class DockerSandbox(WorkspaceSandbox):
    backend = "docker"

    def __init__(self, seed: WorkspaceSeed, limits: SandboxLimits) -> None:
        import docker
        from docker.types import Mount

        self.client = docker.from_env(timeout=60)
        self.api = self.client.api
        image = ensure_image(self.client)
        self.rlimits = rlimit_env(limits, RLIMITS_SCRIPT_IN_IMAGE, per_uid_processes=False, address_space=False)
        super().__init__(seed, limits)
        try:
            self.container = self.client.containers.run(
                image,
                ["/usr/bin/sleep", "infinity"],
                detach=True,
                init=True,
                user=f"{KEEPALIVE_UID}:{KEEPALIVE_UID}",
                network_mode="none",
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                pids_limit=limits.pids,
                mem_limit=f"{limits.memory_mb}m",
                memswap_limit=f"{limits.memory_mb}m",
                nano_cpus=int(limits.cpus * 1e9),
                shm_size="1m",
                hostname="sandbox",
                working_dir="/workspace",
                mounts=[
                    Mount("/workspace", str(self.workspace.files), type="bind"),
                    Mount("/tmp", str(self.workspace.tmp), type="bind"),
                ],
                labels={LABEL: str(self.workspace.slot), OWNER_LABEL: process_identity(os.getpid()) or ""},
            )
            self.init_pid = self._read_init_pid()
        except Exception as exc:
            self.workspace.remove()
            raise SandboxError(f"docker sandbox could not start: {exc}") from exc

    def _read_init_pid(self) -> int:
        self.container.reload()
        return int(self.container.attrs["State"]["Pid"])

    def _init_alive(self) -> bool:
        """Whether the container's pid 1 lives, read from the host's /proc (the engine's state lags behind)."""
        try:
            state = Path(f"/proc/{self.init_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    def _init_dies_soon(self) -> bool:
        """After a command died of a signal: was it the whole container? A container kill reaches the command and
        the init in no fixed order, so watch the init for a moment before calling it the command's own death."""
        deadline = time.monotonic() + DEATH_WATCH_S
        while self._init_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _workspace_owner(self, slot: int) -> int:
        return SANDBOX_UID

    def _run(
        self, argv: list[str], timeout: float, streams: dict[int, CappedStream], env: dict[str, str] | None = None
    ) -> tuple[str, bool]:
        """Start argv as the sandbox user and read its output until it ends or `timeout` passes.

        Returns the exec id and whether it ended. The stream is read through our own deadline, never a blocking
        SDK call: an exec the engine could not start (every pid of the cgroup taken) may never close its stream.
        """
        exec_id = self.api.exec_create(
            self.container.id, argv, user=SANDBOX_USER, workdir="/workspace", environment=env
        )["Id"]
        sock = self.api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        deadline = time.monotonic() + timeout
        pending = bytearray()
        try:
            while (wait := deadline - time.monotonic()) > 0:
                if not select.select([raw], [], [], wait)[0]:
                    continue
                chunk = raw.recv(1 << 16)
                if not chunk:
                    return exec_id, True
                pending += chunk
                while len(pending) >= 8 and len(pending) >= 8 + int.from_bytes(pending[4:8], "big"):
                    size = int.from_bytes(pending[4:8], "big")  # frame: stream id, 3 zero bytes, size, payload
                    streams.get(pending[0], streams[2]).add(bytes(pending[8 : 8 + size]))
                    del pending[: 8 + size]
            return exec_id, False
        finally:
            # shutdown, not just close: the SDK's response object still references this socket, and an engine
            # left writing a flood into a half-open connection stalls every later exec of the container.
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _stop_processes(self) -> None:
        """Kill every process of the sandbox user; restart the container if that exec does not run (a fork bomb
        holding every pid of the cgroup leaves no room for one more process)."""
        if not self.is_alive():
            return
        sink = CappedStream(1024)
        try:
            kill, ended = self._run(["/bin/bash", "-c", f"{KILL_ALL}; exit 0"], KILL_TIMEOUT_S, {1: sink, 2: sink})
            if ended and self.api.exec_inspect(kill).get("ExitCode") == 0:
                return
        except Exception:  # the engine refused the exec: the restart below still clears the container
            pass
        self.container.restart(timeout=0)
        self.init_pid = self._read_init_pid()

    def exec(self, command: str, timeout: float) -> ExecResult:
        self._check_open()
        if refused := refuse_unrunnable(command):
            return refused
        start = time.monotonic()
        # The wrapper outlives the command to kill what it left; its own stderr goes to /dev/null so it adds no
        # "line 1: 26 Killed ..." job reports to the command's output (the command keeps the real stderr, fd 3).
        wrapper = f'exec 3>&2 2>/dev/null; /bin/bash -c "$1" 2>&3 3>&-; rc=$?; {KILL_ALL}; exit $rc'
        argv = ["/bin/bash", "-c", wrapper, "sandbox", command]
        stdout, stderr = CappedStream(self.limits.output_cap_bytes), CappedStream(self.limits.output_cap_bytes)
        try:
            exec_id, ended = self._run(argv, timeout, {1: stdout, 2: stderr}, self.rlimits)
        except Exception as exc:
            return ExecResult(exit_code=-1, duration_s=time.monotonic() - start, error=f"docker exec failed: {exc}")
        if not ended:
            self._stop_processes()
        return self._result(exec_id, stdout, stderr, not ended, time.monotonic() - start)

    def _result(
        self, exec_id: str, stdout: CappedStream, stderr: CappedStream, timed_out: bool, duration: float
    ) -> ExecResult:
        try:
            exit_code = self.api.exec_inspect(exec_id).get("ExitCode")
        except Exception:  # the engine lost the exec along with its container
            exit_code = None
        outcome = ProcessOutcome(exit_code if exit_code is not None else -1, stdout, stderr, timed_out, duration)
        if not timed_out and (exit_code is None or exit_code >= 128) and self._init_dies_soon():
            return outcome.result(-1, error="the docker sandbox died during the command (stopped or removed)")
        return outcome.result(outcome.returncode)

    def is_alive(self) -> bool:
        if self.closed or not self.workspace.files.is_dir():
            return False
        try:
            return bool(self.api.inspect_container(self.container.id)["State"]["Running"])
        except Exception:  # removed, or the engine is gone: either way it cannot run commands
            return False

    def _clear(self) -> None:
        if self.workspace.world_writable and self.is_alive():
            # Without root the files the container's uid made are not ours to delete: it deletes them itself.
            sink = CappedStream(1024)
            wipe = "chmod -R u+rwX /workspace /tmp 2>/dev/null; find /workspace /tmp -mindepth 1 -delete"
            self._run(["/bin/bash", "-c", wipe], KILL_TIMEOUT_S, {1: sink, 2: sink})
        self.workspace.wipe()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already removed from outside; the workspace must still go
            if self.workspace.world_writable:
                self._stop_processes()
                self._clear()
            self.container.remove(force=True)
        self.workspace.remove()
        self.client.close()


def reap_stale_containers() -> int:
    """Remove sandbox containers whose creating process is gone (a crashed or killed pool). Returns how many."""
    import docker

    client = docker.from_env(timeout=30)
    reaped = 0
    for summary in client.api.containers(all=True, filters={"label": LABEL}):  # one call: no per-container lookups
        owner = (summary.get("Labels") or {}).get(OWNER_LABEL, "")
        if not owner or process_identity(int(owner.split()[0])) != owner:
            try:
                client.api.remove_container(summary["Id"], force=True)
                reaped += 1
            except docker.errors.NotFound:
                pass  # its owner's close() got there first
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: another pool's reaper is removing it (nodes sharing one engine)
                    raise
    client.close()
    return reaped
