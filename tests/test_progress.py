"""Progress for a person: a bar with an ETA on a terminal, plain periodic lines in a job log or a pipe."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fieldkit import progress as progress_module
from fieldkit.progress import Phase


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100), out


def test_on_a_terminal_a_phase_draws_a_bar_with_its_count_and_eta() -> None:
    term, out = console(terminal=True)
    with Phase("pretraining", console=term) as phase:
        for done in range(1, 11):
            phase(done, 10)
    drawn = out.getvalue()
    assert "pretraining" in drawn and "10/10" in drawn and "eta" in drawn
    assert "━" in drawn  # the bar itself


def test_off_a_terminal_a_phase_prints_a_line_each_period_and_one_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 10.0, 31.0, 45.0, 62.0, 70.0])  # the time at each call, then at the end
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    log, out = console(terminal=False)
    with Phase("step 3 rollouts", console=log) as phase:
        for done in range(1, 6):
            phase(done, 8)
    assert out.getvalue().splitlines() == [
        "step 3 rollouts: 3/8 (31s, ~52s left)",  # 31 s for 3: ~10.3 s each, 5 to go
        "step 3 rollouts: 5/8 (1m02s, ~37s left)",
        "step 3 rollouts: 5/8 in 1m10s",
    ]


def test_a_transient_phase_leaves_no_line_and_one_without_a_total_prints_nothing() -> None:
    log, out = console(terminal=False)
    with Phase("gate", console=log, transient=True) as phase:
        phase(2, 2)
    with Phase("pretraining (cached)", console=log):
        pass
    with Phase("SFT, not planned yet", console=log) as phase:
        phase(0, 0)
    assert out.getvalue() == ""
