"""Where a run's logs go: files under runs/<run>/logs/, so that the console shows only what a person reads.

Quiet (the default of `fieldkit demo` and `python -m services.train`; `--verbose` turns all of it off):
- Ray does not forward the actors' output to the driver (`log_to_driver=False`, in `services.cluster.connect`).
  Instead each actor, first thing in its `__init__` (`capture_actor_output`), points its process's stdout and
  stderr file descriptors at `logs/<role>-<pid>.log`. Descriptors rather than logging handlers, because most of
  what actors print never passes through their Python logging: vLLM's engine core and its workers are child
  processes (they inherit the descriptors), torch and Ray's core worker write from C++, tqdm bars and warnings
  write to the streams. The directory reaches the actors as $FIELDKIT_LOG_DIR, set job-wide by `connect` (a
  runtime_env that Ray merges with the job's own under `ray job submit`), so no actor signature carries it.
- The driver (`quiet_driver`) sends its file descriptor 2, and with it sys.stderr, to `logs/driver.log`: Ray's log
  lines, its core worker's C++ errors, Python warnings, library progress bars, whichever stream object their
  handlers hold. What a person reads goes to stdout (the rich console); an uncaught exception's traceback goes to
  the console as well.
Ray keeps its own session logs too (/tmp/ray/session_*/logs): they also hold what an actor printed before its
`__init__` ran (import-time warnings). Files under the run were chosen over linking those: they hold every job of
the cluster under worker ids, and they are not kept with the run.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich import get_console

LOG_DIR_ENV = "FIELDKIT_LOG_DIR"
_quiet_dir: Path | None = None  # where this driver's stderr goes, once quiet_driver has run


def quiet_driver(log_dir: Path) -> Path:
    """From now on this process's stderr (descriptor 2, and so sys.stderr) appends to `log_dir`/driver.log; stdout
    stays on the console, and an uncaught exception's traceback goes to both. Returns the directory in use: a
    process that runs several runs (`fieldkit demo --seeds`) keeps the first one's, as its actors do."""
    global _quiet_dir
    if _quiet_dir is not None:
        return _quiet_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    console_err: TextIO = os.fdopen(os.dup(2), "w", buffering=1)  # the terminal's stderr, kept for a traceback
    _point_descriptors_at(log_dir / "driver.log", 2)
    log_traceback = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        traceback.print_exception(kind, error, tb, file=console_err)
        console_err.write(f"(the run's logs: {log_dir}/)\n")
        log_traceback(kind, error, tb)

    sys.excepthook = excepthook
    _quiet_dir = log_dir
    return log_dir


def capture_actor_output(role: str) -> Path | None:
    """In a quiet run, point this actor process's stdout and stderr at $FIELDKIT_LOG_DIR/<role>-<pid>.log (a
    restarted actor has a new pid, so a new file); returns the file, or None when the run is verbose."""
    log_dir = os.environ.get(LOG_DIR_ENV)
    if not log_dir:
        return None
    path = Path(log_dir) / f"{role}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    _point_descriptors_at(path, 1, 2)
    return path


def _point_descriptors_at(path: Path, *descriptors: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for descriptor in descriptors:
        os.dup2(fd, descriptor)
    os.close(fd)


def console_says_where(log_dir: Path, dashboard_url: str) -> None:
    """The one console line of a quiet run about what it does not show."""
    get_console().print(
        f"logs (Ray, vLLM, the actors): {log_dir}/  |  --verbose shows them here  |  Ray dashboard: {dashboard_url}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
