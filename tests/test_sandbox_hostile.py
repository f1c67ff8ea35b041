"""The hostile-command suite, run against every backend that isolates (docker, bwrap).

Each case runs what a misbehaving model might send and asserts two things: the host is unaffected (its files,
processes, listeners, disk), and the sandbox answers with a clear observation (an exit code, a message, a timeout)
and keeps working afterwards. Network targets are only listeners this test starts on the host's 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, require_sandbox_backend

from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed
from sandbox import Sandbox, SandboxLimits, create_sandbox
from sandbox.image import build_rootfs

pytestmark = pytest.mark.sandbox

SEED = WorkspaceSeed(files=[WorkspaceFile(path="keep.txt", content="seeded\n")])
LIMITS = SandboxLimits(memory_mb=128, pids=64, cpu_seconds=10, workspace_mb=16, output_cap_bytes=64 * 1024)
CANARY = "fieldkit-hostile-canary-7f3a"
os.environ["FIELDKIT_HOSTILE_CANARY"] = CANARY  # in this process's environment before any sandbox starts


@dataclass
class HostListeners:
    """A TCP and a UDP socket on the host's 127.0.0.1 that record whatever reaches them."""

    tcp_port: int = 0
    udp_port: int = 0
    received: list[str] = field(default_factory=list)

    def start(self) -> None:
        tcp = socket.create_server(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        threading.Thread(target=self._accept, args=(tcp,), daemon=True).start()
        threading.Thread(target=self._receive, args=(udp,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            conn, peer = server.accept()
            self.received.append(f"tcp connection from {peer}")
            conn.close()

    def _receive(self, server: socket.socket) -> None:
        while True:
            data, peer = server.recvfrom(4096)
            self.received.append(f"udp datagram {data[:40]!r} from {peer}")

    def assert_untouched(self) -> None:
        time.sleep(0.2)  # let a connection that did get through be recorded
        assert self.received == [], "the sandbox reached a host listener"


@pytest.fixture(scope="module")
def listeners() -> HostListeners:
    host = HostListeners()
    host.start()
    return host


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def isolated(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    sandbox = create_sandbox(SEED, require_sandbox_backend(request.param), LIMITS)
    yield sandbox
    sandbox.close()


@pytest.fixture
def box(isolated: Sandbox) -> Sandbox:
    isolated.reset(SEED)
    return isolated


def assert_still_works(box: Sandbox) -> None:
    box.reset(SEED)
    result = box.exec("cat keep.txt", 10)
    assert (result.exit_code, result.stdout, result.error) == (0, "seeded\n", None), result
    assert box.is_alive()


# --- network: only the host's own 127.0.0.1 listeners are targeted ------------------------------------------------


def test_tcp_connect_to_host_loopback(box: Sandbox, listeners: HostListeners) -> None:
    result = box.exec(f"exec 3<>/dev/tcp/127.0.0.1/{listeners.tcp_port} && echo CONNECTED", 10)
    assert result.exit_code != 0 and "CONNECTED" not in result.stdout
    assert "Connection refused" in result.stderr or "unreachable" in result.stderr
    listeners.assert_untouched()


@pytest.mark.parametrize("client", ["curl -sS -m 3", "wget -q -T 3 -O -"])
def test_http_clients_to_host_loopback(box: Sandbox, listeners: HostListeners, client: str) -> None:
    result = box.exec(f"{client} http://127.0.0.1:{listeners.tcp_port}/", 10)
    assert result.exit_code != 0 and not result.timed_out  # absent from the image (127) or refused
    listeners.assert_untouched()


def test_python_socket_to_host_loopback(box: Sandbox, listeners: HostListeners) -> None:
    code = f"import socket; socket.create_connection(('127.0.0.1', {listeners.tcp_port}), timeout=3)"
    result = box.exec(f'python3 -c "{code}" || python -c "{code}"', 10)
    assert result.exit_code != 0
    listeners.assert_untouched()


def test_udp_datagram_to_host_loopback(box: Sandbox, listeners: HostListeners) -> None:
    box.exec(f"echo leak > /dev/udp/127.0.0.1/{listeners.udp_port}", 10)
    listeners.assert_untouched()


def test_dns_lookups_reach_no_resolver(box: Sandbox, listeners: HostListeners) -> None:
    lookup = box.exec("getent hosts fieldkit-canary.example", 10)
    assert lookup.exit_code != 0 and lookup.stdout == ""
    query = "\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07example\\x03com\\x00\\x00\\x01\\x00\\x01"
    box.exec(f"printf '{query}' > /dev/udp/127.0.0.1/{listeners.udp_port}", 10)  # a hand-made DNS query
    listeners.assert_untouched()


def test_no_network_interface_but_loopback(box: Sandbox) -> None:
    result = box.exec("tail -n +3 /proc/net/dev | cut -d: -f1; tail -n +2 /proc/net/route | wc -l", 10)
    lines = result.stdout.split()
    assert lines[:-1] == ["lo"] and lines[-1] == "0", result.stdout


# --- host files ----------------------------------------------------------------------------------------------------


def test_host_secrets_are_not_readable(box: Sandbox) -> None:
    result = box.exec("cat /etc/shadow; ls -A /root; cat /root/.ray/auth_token", 10)
    assert result.exit_code != 0 and result.stdout == ""
    host_shadow = Path("/etc/shadow").read_text().splitlines()[0] if os.access("/etc/shadow", os.R_OK) else "root:"
    assert host_shadow not in result.stdout + result.stderr


def test_project_dir_and_host_tmp_are_not_visible(box: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "canary.txt").write_text(CANARY)
    result = box.exec(f"cat {REPO}/pyproject.toml {tmp_path}/canary.txt; ls {REPO}", 10)
    assert result.exit_code != 0 and result.stdout == ""
    assert CANARY not in result.stderr and "fieldkit-mesh" not in result.stderr


def test_host_environment_is_not_in_proc(box: Sandbox) -> None:
    result = box.exec("cat /proc/1/environ /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/cmdline", 10)
    assert CANARY not in result.stdout
    assert "pytest" not in result.stdout


# --- writing outside the workspace, destroying things ------------------------------------------------------------


def test_writes_outside_the_workspace_fail(box: Sandbox) -> None:
    result = box.exec("for p in /evil /etc/evil /usr/bin/evil /bin/bash; do echo x >> $p && echo WROTE $p; done", 10)
    assert "WROTE" not in result.stdout
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr
    rootfs = build_rootfs()
    assert not (rootfs / "evil").exists() and not (rootfs / "etc" / "evil").exists()


def test_rm_rf_root(box: Sandbox) -> None:
    before = (build_rootfs() / "usr/bin/bash").stat()
    result = box.exec("rm -rf --no-preserve-root / 2>/dev/null; ls /usr/bin | wc -l", 30)
    assert int(result.stdout.strip() or "0") > 50, "the read-only root lost files"
    assert (build_rootfs() / "usr/bin/bash").stat() == before
    assert (REPO / "pyproject.toml").exists()
    assert box.snapshot().entries == []  # the workspace was the one thing it could delete
    assert_still_works(box)


def test_chmod_and_setuid_tricks(box: Sandbox) -> None:
    result = box.exec("cp /bin/bash ./b && chmod 4755 ./b && ./b -p -c 'id -u'; chmod 4755 /bin/bash; id -u", 10)
    assert result.stdout.split() == ["65532", "65532"], result
    assert (build_rootfs() / "usr/bin/bash").stat().st_mode & 0o6000 == 0


# --- resource exhaustion -----------------------------------------------------------------------------------------


def test_fork_bomb(box: Sandbox) -> None:
    result = box.exec("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", 6)
    assert "Resource temporarily unavailable" in result.stderr or result.timed_out, result
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes
    assert_still_works(box)


def test_memory_bomb(box: Sandbox) -> None:
    result = box.exec("tail /dev/zero", 60)  # buffers an endless line: allocates until stopped
    assert result.exit_code != 0 and not result.timed_out, result
    assert_still_works(box)


@pytest.mark.parametrize("where", ["/workspace", "/tmp"])
def test_disk_fill_stops_at_the_workspace_limit(box: Sandbox, where: str) -> None:
    if not box.workspace.size_enforced:
        pytest.skip("the workspace is no size-limited tmpfs here (needs root)")
    result = box.exec(f"for i in 1 2 3 4; do head -c 6M /dev/zero > {where}/fill$i || break; done; df -k {where}", 30)
    assert "No space left on device" in result.stderr, result
    assert sum(e.size for e in box.snapshot().entries) <= LIMITS.workspace_mb << 20
    assert_still_works(box)


def test_output_flood(box: Sandbox) -> None:
    result = box.exec("yes flood", 2)
    assert result.timed_out and result.output_truncated
    assert len(result.stdout) < LIMITS.output_cap_bytes + 200
    assert_still_works(box)


def test_endless_loop_times_out_and_is_gone(box: Sandbox) -> None:
    result = box.exec("while :; do date +%s%N > tick; done", 1)
    assert (result.exit_code, result.timed_out) == (124, True)
    first = box.snapshot().entry("tick")
    time.sleep(0.3)
    assert box.snapshot().entry("tick") == first
    assert_still_works(box)


def test_sleep_beyond_the_timeout(box: Sandbox) -> None:
    result = box.exec("sleep 300", 1)
    assert (result.exit_code, result.timed_out) == (124, True) and result.duration_s < 10


def test_background_escapees_are_killed_after_exit(box: Sandbox) -> None:
    loop = "while :; do date +%s%N > {}; sleep 0.05; done"
    spawn = (
        f"nohup bash -c '{loop.format('tick1')}' >/dev/null 2>&1 & disown; "
        f"setsid bash -c '{loop.format('tick2')}' >/dev/null 2>&1 & sleep 0.5; echo left"
    )
    assert box.exec(spawn, 10).stdout == "left\n"
    first = box.snapshot()
    time.sleep(0.4)
    for tick in ("tick1", "tick2"):
        assert first.entry(tick) is not None and box.snapshot().entry(tick) == first.entry(tick), tick


def test_killing_processes_outside(box: Sandbox) -> None:
    host_sleep = subprocess.Popen(["sleep", "60"])
    try:
        result = box.exec(f"kill -9 {host_sleep.pid}; kill -9 1; kill -9 -1; echo tried", 10)
        assert host_sleep.poll() is None, "a host process was killed from inside the sandbox"
        assert result.error is None
        assert_still_works(box)
    finally:
        host_sleep.kill()
        host_sleep.wait()


# --- grading traps, odd commands and output ---------------------------------------------------------------------


def test_symlink_to_a_host_file_is_graded_as_a_symlink(box: Sandbox) -> None:
    box.exec(f"ln -s /etc/shadow s; ln -s {REPO}/pyproject.toml p; ln -s ../../../../etc/hostname rel; ln -s / r", 10)
    snapshot = box.snapshot()
    for name, target in (("s", "/etc/shadow"), ("p", f"{REPO}/pyproject.toml"), ("r", "/")):
        entry = snapshot.entry(name)
        assert (entry.kind, entry.link_target, entry.data) == ("symlink", target, None)
    assert all(not e.path.startswith("r/") for e in snapshot.entries)  # never walked into


def test_hard_link_to_a_system_file_fails(box: Sandbox) -> None:
    result = box.exec("ln /etc/passwd hard", 10)
    assert result.exit_code != 0 and box.snapshot().entry("hard") is None


def test_very_long_command_lines(box: Sandbox) -> None:
    longest = box.exec("echo " + "a" * 120_000 + " | wc -c", 10)
    assert longest.stdout == "120001\n"
    too_long = box.exec("echo " + "a" * 1_000_000, 10)
    assert too_long.exit_code == 126 and "at most" in too_long.stderr
    many_args = box.exec("printf '%s\\n' {1..200000} | wc -l", 20)
    assert many_args.stdout == "200000\n"


def test_binary_and_non_utf8_output(box: Sandbox) -> None:
    result = box.exec("head -c 20000 /dev/urandom; printf '\\300\\301' >&2", 10)
    assert result.exit_code == 0 and "\ufffd" in result.stderr
    result.model_dump_json()  # still a valid record to send across actors


def test_devices_are_minimal(box: Sandbox) -> None:
    result = box.exec("ls /dev; cat /dev/sda /dev/vda /dev/mem /dev/kmsg 2>&1 | head -c 200 | wc -c", 10)
    assert "sda" not in result.stdout.split() and "mem" not in result.stdout.split()
    assert box.exec("head -c 1 /dev/mem /dev/kmsg", 10).exit_code != 0
