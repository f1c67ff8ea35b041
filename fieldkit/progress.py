"""Progress of long work, for a person: a rich bar with an ETA on a terminal, plain periodic lines anywhere else.

Long work reports `(done, total)` to a `Phase` as it goes (a plain callable, so torch loops in fieldkit take it as a
callback). Off a terminal (`ray job submit` logs, CI, a pipe) rich would draw nothing until the end (its live
display renders only on a terminal), so there a phase prints one line every `PLAIN_PERIOD_S` instead: the job's log
reads like the terminal. A phase that is never called prints nothing (a cached model builds nothing).
"""

from __future__ import annotations

import os
import time
from types import TracebackType

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_PERIOD_S = 30.0  # off a terminal: one line this often per phase, so a log shows the work is alive


PIPED_WIDTH = 120  # a log file or `ray job logs` has no width; rich's 80 columns would wrap every table row


def widen_when_piped() -> None:
    """Give rich's console PIPED_WIDTH columns when stdout is not a terminal (a terminal keeps its own width)."""
    console = get_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH


class Phase:
    """One long phase. Call it with `(done, total)`; leave the `with` block to end it. A call with no total yet (0:
    a trainer that has not planned its steps) shows nothing.

    When it ends it leaves one line (the finished bar, or a plain summary) unless `transient`: for phases whose
    caller prints its own summary line right after (a training step, a gate)."""

    def __init__(self, label: str, *, console: Console | None = None, transient: bool = False) -> None:
        self.label = label
        self.console = console or get_console()  # rich's one stdout console: what the driver prints shares it
        self.transient = transient
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._started: float | None = None
        self._last_line = 0.0
        self._done = 0
        self._total = 0

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        now = time.monotonic()
        if self._started is None:
            self._started = self._last_line = now
            if self.console.is_terminal:
                self._start_bar(total)
        self._done, self._total = done, total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)
        elif now - self._last_line >= PLAIN_PERIOD_S and done < total:
            self._last_line = now
            elapsed = now - self._started
            eta = f", ~{_duration(elapsed / done * (total - done))} left" if done else ""
            self._line(f"{self.label}: {done}/{total} ({_duration(elapsed)}{eta})")

    def _start_bar(self, total: int) -> None:
        columns = [
            TextColumn(f"[bold]{self.label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
        # redirect off: what other code writes to sys.stdout/stderr must stay where it was sent (the run's logs)
        self._bar = Progress(
            *columns, console=self.console, transient=self.transient, redirect_stdout=False, redirect_stderr=False
        )
        self._task = self._bar.add_task(self.label, total=total)
        self._bar.start()

    def __enter__(self) -> Phase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._started is not None and not self.transient:
            self._line(f"{self.label}: {self._done}/{self._total} in {_duration(time.monotonic() - self._started)}")

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
