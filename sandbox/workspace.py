"""A sandbox's writable area on the host: `files/` (seen inside as /workspace) and `tmp/` (seen inside as /tmp).

Both live under one directory. As root that directory is a tmpfs mounted with `size=` (and an inode cap), so a
command that fills the disk gets "No space left on device" at the workspace limit and the host's disk is never
touched; a filesystem of its own also rules out hard links to host files. Without root it is a plain temp dir and
the limit holds per file only (RLIMIT_FSIZE), which `size_enforced` reports.

Every workspace gets a slot number, unique among live workspaces on the host because it is claimed with an
exclusive mkdir. The bwrap backend runs each sandbox as its own host uid derived from the slot, so the per-uid
process limit (RLIMIT_NPROC) of one sandbox is not shared with another.

Seeding, wiping and snapshots work on the host side: no process runs inside the sandbox for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import random
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fieldkit.gym.records import SnapshotEntry, WorkspaceSeed, WorkspaceSnapshot

log = logging.getLogger(__name__)

ROOT_BASE = Path(os.environ.get("FIELDKIT_SANDBOX_RUN_DIR", "/run/fieldkit-sandbox"))
SLOT_COUNT = 50_000  # slots (and so bwrap uids) per host; live sandboxes are far fewer, so a free one is near
MS_NOSUID, MS_NODEV = 2, 4
OWNER_FILE = "owner"  # beside files/ and tmp/ (never bound into the sandbox): "pid starttime" of the creator


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    inodes = max(4096, size_bytes // 1024)
    options = f"size={size_bytes},nr_inodes={inodes},mode=0755".encode()
    if libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {path}: {os.strerror(err)}")


def _unmount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(str(path).encode(), 2) != 0:  # MNT_DETACH: a process still inside cannot keep it busy
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (already unmounted)
            raise OSError(err, f"umount {path}: {os.strerror(err)}")


class Workspace:
    """Host directories of one sandbox. `owner_for_slot(slot)` names the host uid the sandbox's commands run as
    (None: this process's uid). As root that uid owns the workspace and what is seeded into it; without root,
    where it cannot be given away, a foreign uid gets world-writable modes instead (docker run by a docker-group
    user: its container uid 65532 must still write the workspace)."""

    def __init__(self, limit_mb: int, owner_for_slot: Callable[[int], int | None] = lambda slot: None) -> None:
        self.limit_bytes = limit_mb << 20
        self.slot, self.root = self._claim_slot()
        owner = owner_for_slot(self.slot)
        self.owner_uid = owner if os.geteuid() == 0 else None
        self.world_writable = os.geteuid() != 0 and owner is not None and owner != os.geteuid()
        self.size_enforced = False
        if os.geteuid() == 0:
            try:
                _mount_tmpfs(self.root, self.limit_bytes)
                self.size_enforced = True
            except OSError as exc:
                log.warning("workspace %s: %s; the size limit holds per file only", self.root, exc)
        (self.root / OWNER_FILE).write_text(process_identity(os.getpid()) or "")
        self.files = self.root / "files"
        self.tmp = self.root / "tmp"
        for path, mode in ((self.files, 0o755), (self.tmp, 0o700)):
            path.mkdir()
            self._own(path, mode)

    @staticmethod
    def _claim_slot() -> tuple[int, Path]:
        if os.geteuid() == 0:
            ROOT_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
            base = ROOT_BASE
        else:
            base = Path(tempfile.gettempdir()) / f"fieldkit-sandbox-{os.geteuid()}"
            base.mkdir(mode=0o700, exist_ok=True)
        for _ in range(1000):
            slot = random.randrange(SLOT_COUNT)
            try:
                (base / str(slot)).mkdir(mode=0o755)
            except FileExistsError:
                continue
            return slot, base / str(slot)
        raise OSError(f"no free workspace slot under {base}: remove stale directories there")

    def _own(self, path: Path, mode: int) -> None:
        if self.world_writable:
            mode = 0o777 if path.is_dir() else 0o666
        os.chmod(path, mode)
        if self.owner_uid is not None:
            os.lchown(path, self.owner_uid, self.owner_uid)

    def seed(self, seed: WorkspaceSeed) -> None:
        """Write the seed's files: text as UTF-8, binary stubs zero-filled to their size (sparse: instant)."""
        total = sum(len(spec.content.encode()) if spec.content is not None else spec.size or 0 for spec in seed.files)
        if total > self.limit_bytes:
            raise ValueError(
                f"workspace seed holds {total} bytes, more than the sandbox's workspace limit of {self.limit_bytes} "
                "bytes (sandbox.workspace_mb)"
            )
        for spec in seed.files:
            target = self.files / spec.path
            for parent in reversed(target.relative_to(self.files).parents[:-1]):
                directory = self.files / parent
                if not directory.exists():
                    directory.mkdir()
                    self._own(directory, 0o755)
            try:
                with open(target, "wb") as handle:
                    if spec.kind == "text":
                        handle.write((spec.content or "").encode())
                    else:
                        handle.truncate(spec.size or 0)
            except OSError as exc:
                raise OSError(exc.errno, f"seeding {spec.path!r} into the workspace: {exc.strerror}") from exc
            self._own(target, 0o644)

    def wipe(self) -> None:
        """Empty files/ and tmp/, whatever modes the sandbox left on what it created."""
        for directory in (self.files, self.tmp):
            for child in list(directory.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    _rmtree(child)
                else:
                    child.unlink()

    def snapshot(self, cap_bytes: int) -> WorkspaceSnapshot:
        """Walk files/ without following symlinks; regular files carry up to cap_bytes of data.

        Only files, directories and symlinks are recorded: a FIFO or socket the agent made is no grading target,
        and opening a FIFO would block.
        """
        entries: list[SnapshotEntry] = []
        for dirpath, dirnames, filenames in os.walk(self.files):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                entry = _entry(full, os.path.relpath(full, self.files), cap_bytes)
                if entry is not None:
                    entries.append(entry)
        entries.sort(key=lambda e: e.path)
        return WorkspaceSnapshot(entries=entries, cap_bytes=cap_bytes)

    def remove(self) -> None:
        _remove_root(self.root)


def _remove_root(root: Path) -> None:
    if not root.exists():
        return
    if os.path.ismount(root):
        _unmount(root)  # a detached tmpfs frees its pages when the last user goes
    else:
        _rmtree(root)
        return
    root.rmdir()


def process_identity(pid: int) -> str | None:
    """pid plus its start time (clock ticks since boot): survives pid reuse, unlike the pid alone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return f"{pid} {fields[19]}"


def reap_stale_workspaces(min_age_s: float = 60.0) -> list[int]:
    """Remove workspaces whose creating process is gone (a crashed or killed pool); returns their slots.

    A workspace without an owner record younger than `min_age_s` may still be being created and is left alone.
    """
    base = ROOT_BASE if os.geteuid() == 0 else Path(tempfile.gettempdir()) / f"fieldkit-sandbox-{os.geteuid()}"
    reaped: list[int] = []
    for root in base.glob("[0-9]*") if base.is_dir() else []:
        try:
            owner = (root / OWNER_FILE).read_text()
        except OSError:
            try:
                if time.time() - root.stat().st_mtime < min_age_s:
                    continue
            except FileNotFoundError:  # its owner removed it meanwhile
                continue
            owner = ""
        if owner and process_identity(int(owner.split()[0])) == owner:
            continue
        with contextlib.suppress(FileNotFoundError):
            _remove_root(root)
            reaped.append(int(root.name))
    return reaped


def _entry(full: str, rel: str, cap_bytes: int) -> SnapshotEntry | None:
    info = os.lstat(full)
    if stat.S_ISLNK(info.st_mode):
        return SnapshotEntry(path=rel, kind="symlink", size=info.st_size, link_target=os.readlink(full))
    if stat.S_ISDIR(info.st_mode):
        return SnapshotEntry(path=rel, kind="dir")
    if not stat.S_ISREG(info.st_mode):
        return None
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # swapped for a symlink since lstat, or unreadable to a non-root host: size only
        return SnapshotEntry(path=rel, kind="file", size=info.st_size)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(cap_bytes) if cap_bytes else b""
    return SnapshotEntry(path=rel, kind="file", size=info.st_size, data=data, truncated=info.st_size > cap_bytes)


def _rmtree(path: Path) -> None:
    """rmtree that also deletes inside directories the sandbox made unreadable or read-only: root ignores modes,
    another user first gives itself access (the tree is its own: the sandbox ran as this user)."""
    if os.geteuid() != 0:
        pending = [str(path)]
        while pending:
            directory = pending.pop()
            with contextlib.suppress(PermissionError):  # a directory of a foreign uid: rmtree will report it
                os.chmod(directory, 0o700)
                pending += [e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    shutil.rmtree(path)
