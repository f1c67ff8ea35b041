"""`fieldkit sandbox exec|backends`, run as a user would: the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_sandbox_backend

pytestmark = pytest.mark.sandbox

FIELDKIT = str(Path(sys.executable).parent / "fieldkit")


def fieldkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FIELDKIT, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("backend", ["docker", "bwrap", "local"])
def test_exec_prints_the_result_as_json(backend: str, tmp_path: Path) -> None:
    require_sandbox_backend(backend)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("# hello\n")
    (tmp_path / "blob.bin").write_bytes(b"\xff\x00" * 50)
    command = "cat docs/readme.md; wc -c < blob.bin"
    run = fieldkit("sandbox", "exec", "--backend", backend, "--seed-dir", str(tmp_path), "--", command)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["exit_code"], result["stdout"], result["error"]) == (0, "# hello\n100\n", None)


def test_exec_joins_several_words_with_quoting() -> None:
    run = fieldkit("sandbox", "exec", "--backend", "local", "--timeout", "1", "--", "printf", "%s|", "a b", "c")
    assert json.loads(run.stdout)["stdout"] == "a b|c|"
    timed = json.loads(fieldkit("sandbox", "exec", "--backend", "local", "--timeout", "0.5", "--", "sleep 5").stdout)
    assert (timed["exit_code"], timed["timed_out"]) == (124, True)


def test_bad_input_is_named() -> None:
    unknown = fieldkit("sandbox", "exec", "--backend", "chroot", "--", "true")
    assert unknown.returncode == 2 and "allowed: auto, docker, bwrap, local" in unknown.stderr
    missing = fieldkit("sandbox", "exec", "--seed-dir", "/nonexistent/seed", "--", "true")
    assert missing.returncode == 2 and "/nonexistent/seed is not a directory" in missing.stderr


def test_backends_lists_local_and_the_auto_choice() -> None:
    report = json.loads(fieldkit("sandbox", "backends", "--json").stdout)
    assert report["backends"]["local"] is None
    assert report["auto"] in ("docker", "bwrap") and report["backends"][report["auto"]] is None


def without_isolation() -> dict[str, str]:
    """This machine as a pod that has neither: no Docker engine at DOCKER_HOST, no bwrap on PATH."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent), "DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_auto_refuses_a_node_without_isolation_and_local_runs_only_when_named() -> None:
    refused = fieldkit("sandbox", "exec", "--backend", "auto", "--", "echo ran", env=without_isolation())
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"no isolating sandbox backend on {socket.gethostname()}" in refused.stderr
    assert (
        "docker: no Docker engine answers" in refused.stderr and "bwrap: bubblewrap is not installed" in refused.stderr
    )
    assert "sandbox.backend: local" in refused.stderr and "--backend local" in refused.stderr
    report = json.loads(fieldkit("sandbox", "backends", "--json", env=without_isolation()).stdout)
    assert report["auto"] is None and report["backends"]["local"] is None
    named = fieldkit("sandbox", "exec", "--backend", "local", "--", "echo ran", env=without_isolation())
    assert named.returncode == 0 and json.loads(named.stdout)["stdout"] == "ran\n"
