"""Quiet runs: what a process writes to its descriptors lands in the run's log files; the console keeps what a person
reads (stdout, and a crash's traceback). Each case runs in a process of its own, as a driver or an actor does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.logs import LOG_DIR_ENV

DRIVER = """
import os, subprocess, sys, warnings
from pathlib import Path
from services.logs import quiet_driver

quiet_driver(Path(sys.argv[1]))
print("a line for the person")
os.write(2, b"a C-level complaint\\n")
warnings.warn("a library warning")
subprocess.run(["sh", "-c", "echo from a child process >&2"], check=True)
raise RuntimeError("the run failed")
"""

ACTOR = """
import subprocess
from services.logs import capture_actor_output

print(capture_actor_output("policy"))
subprocess.run(["sh", "-c", "echo engine core says hello; echo engine core warns >&2"], check=True)
"""


def run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)


def test_a_quiet_driver_logs_stderr_and_shows_stdout_and_its_crash(tmp_path: Path) -> None:
    done = run(DRIVER, str(tmp_path / "logs"))
    assert done.returncode == 1
    assert done.stdout == "a line for the person\n"
    assert "RuntimeError: the run failed" in done.stderr and f"(the run's logs: {tmp_path / 'logs'}/)" in done.stderr
    assert "complaint" not in done.stderr and "warning" not in done.stderr
    log = (tmp_path / "logs" / "driver.log").read_text()
    for line in ("a C-level complaint", "UserWarning: a library warning", "from a child process", "the run failed"):
        assert line in log


def test_an_actor_of_a_quiet_run_sends_its_output_and_its_child_processes_to_its_file(tmp_path: Path) -> None:
    done = run(ACTOR, env={**os.environ, LOG_DIR_ENV: str(tmp_path)})
    assert done.returncode == 0 and done.stdout == done.stderr == ""
    (log,) = tmp_path.glob("policy-*.log")
    assert log.read_text().splitlines() == [str(log), "engine core says hello", "engine core warns"]


def test_an_actor_of_a_verbose_run_leaves_its_output_where_it_was(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != LOG_DIR_ENV}
    done = run(ACTOR, env=env)
    assert done.stdout == "None\nengine core says hello\n" and done.stderr == "engine core warns\n"
