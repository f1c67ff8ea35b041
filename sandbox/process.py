"""Running one host process with a wall timeout and capped output: the engine of the bwrap and local backends.

The process starts in a session of its own; on timeout (and after a normal exit, to catch background children)
the whole process group is killed. Output is read with select() from both pipes in this thread, keeping at most
`cap` bytes per stream and draining the rest, so a command that floods output neither blocks on a full pipe nor
grows this process's memory. A pipe still held open by a child that left the group is abandoned after a short
grace, so `exec` returns when the command is done.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fieldkit.gym.records import ExecResult

TIMEOUT_EXIT_CODE = 124  # what coreutils `timeout` and the reference harness report
PIPE_GRACE_S = 0.25  # after exit, how long to wait for pipes still held by escaped children
READ_CHUNK = 1 << 16


@dataclass
class CappedStream:
    """The first `cap` bytes of a stream; the rest is counted and dropped."""

    cap: int
    kept: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        """Decoded output; bytes that are not UTF-8 become U+FFFD so the observation is always valid text."""
        decoded = self.kept.decode("utf-8", errors="replace")
        if self.dropped:
            decoded += f"\n[output truncated: {self.dropped} more bytes dropped after the first {self.cap}]"
        return decoded


@dataclass
class ProcessOutcome:
    returncode: int  # as Popen reports it: negative when the process itself died of a signal
    stdout: CappedStream
    stderr: CappedStream
    timed_out: bool
    duration_s: float

    def result(self, exit_code: int, error: str | None = None) -> ExecResult:
        return ExecResult(
            exit_code=TIMEOUT_EXIT_CODE if self.timed_out else exit_code,
            stdout=self.stdout.text(),
            stderr=self.stderr.text(),
            timed_out=self.timed_out,
            duration_s=self.duration_s,
            output_truncated=bool(self.stdout.dropped or self.stderr.dropped),
            error=error,
        )


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already gone
        os.killpg(pgid, signal.SIGKILL)


def run_process(
    argv: Sequence[str],
    *,
    timeout: float,
    output_cap: int,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    user: int | None = None,
) -> ProcessOutcome:
    """Run argv (stdin closed) until it exits or `timeout` seconds pass; then kill its process group."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )
    assert proc.stdout is not None and proc.stderr is not None
    streams = {proc.stdout.fileno(): CappedStream(output_cap), proc.stderr.fileno(): CappedStream(output_cap)}
    deadline = start + timeout
    timed_out = False
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                kill_group(proc.pid)
            if exited_at is not None and now - exited_at > PIPE_GRACE_S:
                break
            if exited_at is None and now >= deadline:
                timed_out = True
                kill_group(proc.pid)
                proc.wait()
                continue
            wait = (exited_at + PIPE_GRACE_S - now) if exited_at is not None else deadline - now
            for key, _ in selector.select(min(wait, 0.1)):
                chunk = os.read(key.fd, READ_CHUNK)
                if chunk:
                    streams[key.fd].add(chunk)
                else:
                    selector.unregister(key.fd)
    if exited_at is None and not timed_out:  # both pipes closed early (`exec >&-`): wait out the deadline
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    kill_group(proc.pid)
    returncode = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    out, err = streams.values()
    return ProcessOutcome(returncode, out, err, timed_out, time.monotonic() - start)
