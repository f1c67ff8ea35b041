"""Functional tests every sandbox backend passes: seeding, exec, timeouts, output caps, snapshots, reset, close.

Each backend gets one sandbox per module (creating a docker one takes about a second), reset before each test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import require_sandbox_backend

from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed, WorkspaceSnapshot
from sandbox import Sandbox, SandboxError, SandboxLimits, available_backends, create_sandbox, resolve_backend
from sandbox.base import MAX_COMMAND_BYTES

pytestmark = pytest.mark.sandbox

SEED = WorkspaceSeed(
    files=[
        WorkspaceFile(path="notes/todo.md", content="- write tests\n- ship\n"),
        WorkspaceFile(path="data.csv", content="a,b\n1,2\n"),
        WorkspaceFile(path="firmware/blob.bin", kind="binary-stub", size=4096),
    ]
)
LIMITS = SandboxLimits(output_cap_bytes=64 * 1024, workspace_mb=16)
# A command that rewrites `tick` every 50 ms for as long as it lives: if `tick` stops changing, it is gone.
TICKER = "while :; do date +%s%N > tick; sleep 0.05; done"


@pytest.fixture(scope="module", params=["docker", "bwrap", "local"])
def shared_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    sandbox = create_sandbox(SEED, require_sandbox_backend(request.param), LIMITS)
    yield sandbox
    sandbox.close()


@pytest.fixture
def box(shared_sandbox: Sandbox) -> Sandbox:
    shared_sandbox.reset(SEED)
    return shared_sandbox


def tick(box: Sandbox) -> bytes | None:
    entry = box.snapshot().entry("tick")
    return entry.data if entry else None


def assert_ticker_stopped(box: Sandbox) -> None:
    first = tick(box)
    time.sleep(0.4)
    assert first is not None and tick(box) == first, "a process of the command is still running"


def test_seed_is_in_the_workspace(box: Sandbox) -> None:
    result = box.exec("cat notes/todo.md; wc -c < firmware/blob.bin; od -An -tx1 -N4 firmware/blob.bin; pwd", 10)
    assert result.exit_code == 0, result
    assert result.stdout.split("\n")[:3] == ["- write tests", "- ship", "4096"]
    assert result.stdout.split("\n")[3].split() == ["00", "00", "00", "00"]
    assert result.stdout.strip().endswith("/workspace") or box.backend == "local"


def test_exit_code_and_streams_are_separate(box: Sandbox) -> None:
    result = box.exec("echo out; echo err >&2; exit 7", 10)
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert not result.timed_out and result.error is None and result.duration_s > 0


def test_files_persist_between_commands_but_shell_state_does_not(box: Sandbox) -> None:
    assert box.exec("mkdir -p out && cd out && echo 42 > answer && export X=1", 10).exit_code == 0
    result = box.exec('cat out/answer; echo "X=${X:-unset}"', 10)
    assert result.stdout == "42\nX=unset\n"


def test_stdin_is_closed(box: Sandbox) -> None:
    result = box.exec("cat; echo done", 5)
    assert (result.exit_code, result.stdout, result.timed_out) == (0, "done\n", False)


def test_timeout_kills_the_command_and_reports_124(box: Sandbox) -> None:
    result = box.exec(TICKER, 1.0)
    assert (result.exit_code, result.timed_out) == (124, True)
    assert result.duration_s < 8
    assert_ticker_stopped(box)


def test_background_process_does_not_outlive_its_command(box: Sandbox) -> None:
    result = box.exec(f"({TICKER}) > /dev/null 2>&1 & sleep 0.2; echo started", 10)
    assert (result.exit_code, result.stdout, result.timed_out) == (0, "started\n", False)
    assert_ticker_stopped(box)


def test_output_is_capped_with_a_marker(box: Sandbox) -> None:
    result = box.exec("head -c 300000 /dev/zero | tr '\\0' x; echo; echo tail >&2", 20)
    assert result.exit_code == 0 and result.output_truncated
    assert result.stdout.startswith("x" * 1000)
    assert result.stdout.count("x") == LIMITS.output_cap_bytes
    assert f"bytes dropped after the first {LIMITS.output_cap_bytes}" in result.stdout
    assert result.stderr == "tail\n"


def test_non_utf8_output_arrives_as_text(box: Sandbox) -> None:
    result = box.exec("printf 'ok \\377\\376 end'", 10)
    assert result.exit_code == 0
    assert result.stdout == "ok \ufffd\ufffd end"


def test_snapshot_records_files_dirs_and_symlinks_without_following(box: Sandbox) -> None:
    command = "mkdir -p out/deep; printf hello >out/deep/h.txt; ln -s /etc/hostname link; head -c 5000 /dev/zero >z"
    assert box.exec(command, 10).exit_code == 0
    snapshot = box.snapshot(cap_bytes=1000)
    assert snapshot.entry("out").kind == "dir"
    assert snapshot.entry("out/deep/h.txt").data == b"hello"
    link = snapshot.entry("link")
    assert (link.kind, link.link_target, link.data) == ("symlink", "/etc/hostname", None)
    big = snapshot.entry("z")
    assert (big.size, big.truncated, big.data) == (5000, True, b"\0" * 1000)
    assert snapshot.entry("firmware/blob.bin").size == 4096
    assert WorkspaceSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot  # crosses actors as JSON


def test_reset_restores_the_seed_and_drops_everything_else(box: Sandbox) -> None:
    box.exec("rm notes/todo.md; echo changed > data.csv; mkdir junk; chmod 000 junk; echo t > /tmp/t", 10)
    box.reset(SEED)
    paths = [entry.path for entry in box.snapshot().entries]
    assert paths == ["data.csv", "firmware", "firmware/blob.bin", "notes", "notes/todo.md"]
    assert box.snapshot().entry("data.csv").data == b"a,b\n1,2\n"
    assert box.exec("ls -A /tmp | wc -l", 10).stdout.strip() == "0" or box.backend == "local"


def test_unrunnable_commands_get_a_clear_observation(box: Sandbox) -> None:
    too_long = box.exec("echo " + "x" * MAX_COMMAND_BYTES, 10)
    assert too_long.exit_code == 126 and "at most" in too_long.stderr
    assert box.exec("echo a\0b", 10).exit_code == 126
    assert box.exec("echo " + "y" * 100_000 + " | wc -c", 10).stdout == "100001\n"


@pytest.mark.parametrize("backend", ["docker", "bwrap", "local"])
def test_close_is_final_and_idempotent(backend: str) -> None:
    sandbox = create_sandbox(SEED, require_sandbox_backend(backend), LIMITS)
    assert sandbox.is_alive()
    sandbox.close()
    sandbox.close()
    assert not sandbox.is_alive()
    with pytest.raises(SandboxError, match="closed"):
        sandbox.exec("true", 5)


def test_seed_larger_than_the_workspace_is_refused() -> None:
    seed = WorkspaceSeed(files=[WorkspaceFile(path="huge.bin", kind="binary-stub", size=17 << 20)])
    with pytest.raises(ValueError, match=r"more than the sandbox's workspace limit .*sandbox.workspace_mb"):
        create_sandbox(seed, "local", LIMITS)


def test_auto_picks_the_strongest_isolating_backend() -> None:
    available = available_backends()
    assert available[-1] == "local"
    assert resolve_backend("auto") == available[0] != "local"  # `auto` refusing a machine without one: test_sandbox_cli
    with pytest.raises(ValueError, match="allowed: auto, docker, bwrap, local"):
        resolve_backend("chroot")


def test_reap_stale_removes_what_a_dead_owner_left_and_keeps_live_sandboxes() -> None:
    from sandbox import reap_stale
    from sandbox.workspace import OWNER_FILE

    dead_owner = "999999999 1"  # no such pid: the creator is gone
    live = create_sandbox(SEED, "local", LIMITS)
    orphan = create_sandbox(SEED, "local", LIMITS)
    (orphan.workspace.root / OWNER_FILE).write_text(dead_owner)  # type: ignore[attr-defined]
    container = None
    if "docker" in available_backends():
        import docker

        from sandbox.container import LABEL, OWNER_LABEL
        from sandbox.image import ensure_image

        client = docker.from_env()
        labels = {LABEL: "orphan", OWNER_LABEL: dead_owner}
        container = client.containers.run(ensure_image(client), ["/usr/bin/sleep", "60"], detach=True, labels=labels)
    reaped = reap_stale()
    assert reaped["workspaces"] >= 1 and not orphan.workspace.root.exists()  # type: ignore[attr-defined]
    assert live.is_alive() and live.exec("cat data.csv", 5).stdout == "a,b\n1,2\n"
    if container is not None:
        import docker

        assert reaped["containers"] >= 1
        with pytest.raises(docker.errors.NotFound):
            container.reload()
    live.close()
