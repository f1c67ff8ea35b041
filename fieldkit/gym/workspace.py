"""Read-only views of a workspace for the grader: a snapshot (what crosses nodes) or a directory on disk.

Both views answer the same two questions, what is at a path and what bytes a file holds, with the same rules:
a symlink is reported as a symlink and never followed (neither as the last component nor as a directory on the
way), nothing outside the workspace is ever opened, and a file larger than the cap is unreadable rather than
silently cut.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from fieldkit.gym.records import SnapshotEntry, WorkspaceSeed, WorkspaceSnapshot

EntryKind = Literal["file", "dir", "symlink"]
DEFAULT_CAP_BYTES = 1 << 20  # the sandbox's default per-file snapshot cap


class Unreadable(Exception):
    """A file whose content cannot be graded; the message is the reason shown in the assertion detail."""


@dataclass(frozen=True)
class Lookup:
    kind: EntryKind | None  # None: nothing there
    detail: str = ""  # why nothing is there when a parent blocks the way (a symlink, a file)


class WorkspaceView(Protocol):
    def lookup(self, path: str) -> Lookup: ...

    def read(self, path: str) -> bytes: ...


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


class SnapshotView:
    """A WorkspaceSnapshot, indexed by normalised path."""

    def __init__(self, snapshot: WorkspaceSnapshot) -> None:
        self.cap_bytes = snapshot.cap_bytes
        self._entries = {PurePosixPath(e.path).as_posix(): e for e in snapshot.entries}

    def lookup(self, path: str) -> Lookup:
        parts = _parts(path)
        if not parts:
            return Lookup("dir")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            parent = self._entries.get(prefix)
            if parent is not None and parent.kind == "symlink":
                return Lookup(None, f"{prefix} is a symlink; not followed")
            if parent is not None and parent.kind == "file":
                return Lookup(None, f"{prefix} is a file, not a directory")
        entry = self._entries.get("/".join(parts))
        return Lookup(entry.kind if entry else None)

    def read(self, path: str) -> bytes:
        found = self.lookup(path)
        if found.kind is None:
            raise Unreadable(found.detail or "missing")
        entry = self._entries["/".join(_parts(path))]
        if entry.kind == "symlink":
            raise Unreadable(f"is a symlink to {entry.link_target!r}; not followed")
        if entry.kind == "dir":
            raise Unreadable("is a directory")
        if entry.truncated:
            raise Unreadable(f"larger than the snapshot cap ({self.cap_bytes} bytes)")
        if entry.data is None:
            raise Unreadable("its content is not in the snapshot (unreadable when the snapshot was taken)")
        return entry.data


class _Blocked(Exception):
    pass


class DirectoryView:
    """A workspace directory, walked one component at a time with O_NOFOLLOW from an fd of its root."""

    def __init__(self, root: str | Path, cap_bytes: int = DEFAULT_CAP_BYTES) -> None:
        self.root = Path(root)
        self.cap_bytes = cap_bytes
        if not self.root.is_dir():
            raise NotADirectoryError(f"workspace {self.root} is not a directory")

    @contextmanager
    def _parent_fd(self, parts: tuple[str, ...]) -> Iterator[int]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise _Blocked(self._why_blocked(fd, part, "/".join(parts[: depth + 1]))) from exc
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _why_blocked(dir_fd: int, name: str, shown: str) -> str:
        try:
            mode = os.lstat(name, dir_fd=dir_fd).st_mode
        except OSError:
            return ""  # simply missing
        if stat.S_ISLNK(mode):
            return f"{shown} is a symlink; not followed"
        if not stat.S_ISDIR(mode):
            return f"{shown} is a file, not a directory"
        return f"{shown} cannot be opened"

    def lookup(self, path: str) -> Lookup:
        parts = _parts(path)
        if not parts:
            return Lookup("dir")
        try:
            with self._parent_fd(parts) as fd:
                mode = os.lstat(parts[-1], dir_fd=fd).st_mode
        except _Blocked as blocked:
            return Lookup(None, str(blocked))
        except FileNotFoundError:
            return Lookup(None)
        if stat.S_ISLNK(mode):
            return Lookup("symlink")
        return Lookup("dir" if stat.S_ISDIR(mode) else "file")

    def read(self, path: str) -> bytes:
        parts = _parts(path)
        if not parts:
            raise Unreadable("is a directory")
        try:
            with self._parent_fd(parts) as dir_fd:
                return self._read_leaf(dir_fd, parts[-1])
        except _Blocked as blocked:
            raise Unreadable(str(blocked) or "missing") from None

    def _read_leaf(self, dir_fd: int, name: str) -> bytes:
        try:
            # O_NONBLOCK: opening a FIFO planted in the workspace must not hang the grader.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise Unreadable("missing") from None
        except OSError as exc:
            mode = os.lstat(name, dir_fd=dir_fd).st_mode
            if stat.S_ISLNK(mode):
                raise Unreadable(f"is a symlink to {os.readlink(name, dir_fd=dir_fd)!r}; not followed") from None
            raise Unreadable(f"cannot be opened: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise Unreadable("is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise Unreadable("is not a regular file")
            if info.st_size > self.cap_bytes:
                raise Unreadable(f"larger than the cap ({self.cap_bytes} bytes)")
            chunks = []
            remaining = self.cap_bytes + 1
            while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 16))):
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) > self.cap_bytes:  # grew between fstat and read
                raise Unreadable(f"larger than the cap ({self.cap_bytes} bytes)")
            return data
        finally:
            os.close(fd)


def as_view(workspace: WorkspaceSnapshot | str | Path | WorkspaceView) -> WorkspaceView:
    if isinstance(workspace, WorkspaceSnapshot):
        return SnapshotView(workspace)
    if isinstance(workspace, str | Path):
        return DirectoryView(workspace)
    return workspace


def seed_snapshot(seed: WorkspaceSeed, cap_bytes: int = DEFAULT_CAP_BYTES) -> WorkspaceSnapshot:
    """The snapshot of a freshly seeded workspace: what an agent that does nothing leaves behind."""
    entries: dict[str, SnapshotEntry] = {}
    for f in seed.files:
        path = PurePosixPath(f.path)
        for parent in reversed(path.parents[:-1]):
            entries.setdefault(parent.as_posix(), SnapshotEntry(path=parent.as_posix(), kind="dir"))
        data = f.content.encode() if f.kind == "text" and f.content is not None else bytes(f.size or 0)
        entries[path.as_posix()] = SnapshotEntry(
            path=path.as_posix(),
            kind="file",
            size=len(data),
            data=data[:cap_bytes],
            truncated=len(data) > cap_bytes,
        )
    return WorkspaceSnapshot(entries=sorted(entries.values(), key=lambda e: e.path), cap_bytes=cap_bytes)
