"""Run storage: where adapter versions, checkpoints and a run's pointers live, for every node of the cluster.

`paths.storage` is a directory (default: the runs directory; a local disk, or a shared filesystem mounted at the
same path on every node) or an object-store URI (`s3://bucket/prefix`, `gs://...`), opened with `pyarrow.fs` the
way Ray Train's `storage_path` is: credentials and endpoint come from the usual environment of each node
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3) or from the URI's query
(`?endpoint_override=host:9000&scheme=http`).

A directory version (an adapter, a learner checkpoint) is complete once its manifest `_complete.json` exists: it is
written last and lists every file with its size and SHA-256. Object stores have no rename, so readers
trust a version only through its manifest; on a filesystem the version is also assembled beside its name and
renamed into place, as every run file is.

Readers go through `fetch`: a directory on a filesystem is read where it is; an object-store version is downloaded
once into the node-local cache (`node_cache_dir`) under a name derived from its URI, checked against the manifest;
a second fetch of the same content costs one small read of its manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

MANIFEST = "_complete.json"
NODE_CACHE_ENV = "FIELDKIT_NODE_CACHE"  # per node: a pod's or host's own scratch disk, which the config cannot know
T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what was being done."""


def is_uri(location: str) -> bool:
    """An object-store URI (scheme://...), as opposed to a directory path."""
    return "://" in location


def node_cache_dir(configured: Path | str | None = None) -> Path:
    """This node's cache of downloaded artifacts: $FIELDKIT_NODE_CACHE (set per node), else `paths.node_cache`,
    else a directory under the system temp."""
    chosen = os.environ.get(NODE_CACHE_ENV) or configured
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"fieldkit-node-cache-{os.getuid()}"


def fetch_dir(location: str, cache: Path | str | None = None) -> Path:
    """A local directory holding the complete version at `location`: a directory path as it is, a URI downloaded
    into this node's cache (once per upload)."""
    if not is_uri(location):
        return Path(location)
    return Storage(location, cache).fetch("")


class Storage:
    def __init__(self, root: str, cache: Path | str | None = None) -> None:
        self.root = root
        self.cache = node_cache_dir(cache)
        self.remote = is_uri(root)
        if self.remote:
            from pyarrow.fs import FileSystem

            parts = urlsplit(root)
            self._parts = (parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query)
            try:
                self.fs, base = FileSystem.from_uri(root)
            except Exception as exc:
                raise StorageError(f"{root}: cannot open this storage URI ({type(exc).__name__}: {exc})") from None
            self.base = base.rstrip("/")
        else:
            self.base = str(Path(root).resolve())

    # ---- names ----------------------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def uri(self, key: str) -> str:
        """What another node passes to `fetch_dir`: the directory's path, or the URI (with this root's query)."""
        if not self.remote:
            return self._path(key)
        scheme, netloc, path, query = self._parts
        return urlunsplit((scheme, netloc, f"{path}/{key}" if key else path, query, ""))

    def key_of(self, uri: str) -> str:
        """The key of a URI (or directory) this storage handed out."""
        if self.remote:
            whole, root = urlsplit(uri)._replace(query="").geturl(), urlsplit(self.uri(""))._replace(query="").geturl()
        else:
            whole, root = str(Path(uri).resolve()), self.base
        if whole != root and not whole.startswith(root + "/"):
            raise StorageError(f"{uri} is not in run storage {self.root}")
        return whole[len(root) :].strip("/")

    def _do(self, what: str, key: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except StorageError:
            raise
        except Exception as exc:  # pyarrow's OSError says little about where; say the URI and the operation
            raise StorageError(f"{self.uri(key)}: {what} failed ({type(exc).__name__}: {exc})") from None

    # ---- directory versions ---------------------------------------------------------------------------------
    def staging(self, key: str) -> Path:
        """A fresh local directory to fill for `put_dir(.., key)`: beside the target on a filesystem (put_dir is then
        one rename), in the node cache otherwise."""
        where = Path(self._path(key)).parent if not self.remote else self.cache / "staging"
        path = where / f".{Path(key).name}.stage{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def put_dir(self, source: Path, key: str) -> str:
        """Make `key` hold the files of `source` (which is consumed), complete or not at all; returns its URI."""
        files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file() and p.name != MANIFEST)
        manifest = {"files": {f: _digest(source / f) for f in files}}
        (source / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if not self.remote:
            replace_dir(source, Path(self._path(key)))
            return self.uri(key)
        self._do("upload", key, lambda: self._upload(source, self._path(key), files))
        cached = self._cached(key)  # the writer keeps its copy: its own next fetch of this upload is free
        cached.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(source, cached)
        return self.uri(key)

    def _upload(self, source: Path, target: str, files: list[str]) -> None:
        self._hide(target)  # an older upload under this key turns invisible before any of its files change
        for name in files:
            with open(source / name, "rb") as src, self.fs.open_output_stream(f"{target}/{name}") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        with self.fs.open_output_stream(f"{target}/{MANIFEST}") as dst:  # last: the version is visible from here on
            dst.write((source / MANIFEST).read_bytes())

    def fetch(self, key: str) -> Path:
        """A local directory with the complete version at `key` (see the module's docstring)."""
        if not self.remote:
            path = Path(self._path(key))
            if not path.is_dir():
                raise StorageError(f"{path}: no such directory in run storage {self.root}")
            return path
        manifest = self._do("reading the manifest", key, lambda: self._read(f"{self._path(key)}/{MANIFEST}"))
        if manifest is None:
            raise StorageError(f"{self.uri(key)}: no complete version there (no {MANIFEST}; absent or mid-upload)")
        cached = self._cached(key)
        if (cached / MANIFEST).is_file() and (cached / MANIFEST).read_bytes() == manifest:
            return cached
        staging = cached.with_name(f".{cached.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            self._do("download", key, lambda: self._download(self._path(key), json.loads(manifest), staging))
            (staging / MANIFEST).write_bytes(manifest)
            replace_dir(staging, cached)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return cached

    def _download(self, source: str, manifest: dict[str, Any], staging: Path) -> None:
        for name, expected in manifest["files"].items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(f"{source}/{name}") as src, open(staging / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            got = _digest(staging / name)
            if got != expected:
                raise StorageError(f"{self.root}: {source}/{name} arrived as {got}, the manifest says {expected}")

    def _cached(self, key: str) -> Path:
        """Where this node keeps its copy of `key`: one directory per URI (the query is not part of the name)."""
        where = urlsplit(self.uri(key))._replace(query="").geturl()
        return self.cache / "storage" / f"{hashlib.sha256(where.encode()).hexdigest()[:16]}-{Path(where).name}"

    def copy_dir(self, source: str, target: str, extra: dict[str, bytes]) -> str:
        """`target` becomes a complete copy of version `source` plus the `extra` files; returns its URI."""
        if not self.remote:
            staging = Path(self._path(target)).with_name(f".{Path(target).name}.copy{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(self._path(source), staging, ignore=shutil.ignore_patterns(MANIFEST))
            for name, data in extra.items():
                (staging / name).write_bytes(data)
            return self.put_dir(staging, target)

        def server_side() -> None:
            read = self._read(f"{self._path(source)}/{MANIFEST}")
            if read is None:
                raise StorageError(f"{self.uri(source)}: no complete version to copy (no {MANIFEST})")
            manifest = json.loads(read)
            self._hide(self._path(target))
            for name in manifest["files"]:
                self.fs.copy_file(f"{self._path(source)}/{name}", f"{self._path(target)}/{name}")
            for name, data in extra.items():
                self._write(f"{self._path(target)}/{name}", data)
                manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            self._write(f"{self._path(target)}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode())

        self._do(f"copying {self.uri(source)} to", target, server_side)
        return self.uri(target)

    def delete(self, key: str) -> None:
        """Remove version `key` (no-op when absent); it stops being complete before any file goes."""
        if not self.remote:
            path = Path(self._path(key))
            hidden = path.with_name(f".{path.name}.retired")
            shutil.rmtree(hidden, ignore_errors=True)  # left by a crash in an earlier deletion
            if path.exists():
                path.rename(hidden)
                shutil.rmtree(hidden)
            return

        def remove() -> None:
            self._hide(self._path(key))
            self.fs.delete_dir_contents(self._path(key), missing_dir_ok=True)

        self._do("delete", key, remove)

    def _hide(self, target: str) -> None:
        from pyarrow.fs import FileType

        if self.fs.get_file_info(f"{target}/{MANIFEST}").type != FileType.NotFound:
            self.fs.delete_file(f"{target}/{MANIFEST}")

    # ---- listing and small files ----------------------------------------------------------------------------
    def children(self, prefix: str, marker: str = MANIFEST) -> list[str]:
        """Names of the directories under `prefix` that hold `marker` (complete versions only)."""
        if not self.remote:
            root = Path(self._path(prefix))
            return sorted(p.name for p in root.iterdir() if (p / marker).is_file()) if root.is_dir() else []

        def listing() -> list[str]:
            from pyarrow.fs import FileSelector, FileType

            found = self.fs.get_file_info(FileSelector(self._path(prefix), allow_not_found=True))
            dirs = [info.base_name for info in found if info.type == FileType.Directory]
            return sorted(d for d in dirs if self.exists(f"{prefix}/{d}/{marker}"))

        return self._do("listing", prefix, listing)

    def exists(self, key: str) -> bool:
        if not self.remote:
            return Path(self._path(key)).exists()
        from pyarrow.fs import FileType

        return self._do("looking up", key, lambda: self.fs.get_file_info(self._path(key)).type != FileType.NotFound)

    def read_bytes(self, key: str) -> bytes:
        """One small file, whole (a run's config.yaml, a pointer)."""
        if not self.remote:
            try:
                return Path(self._path(key)).read_bytes()
            except OSError as exc:
                raise StorageError(f"{self._path(key)}: cannot read ({exc})") from None
        data = self._do("reading", key, lambda: self._read(self._path(key)))
        if data is None:
            raise StorageError(f"{self.uri(key)}: no such object")
        return data

    def write_bytes(self, key: str, data: bytes) -> None:
        """One small file, replaced whole (a reader sees the old or the new, never half)."""
        if not self.remote:
            path = Path(self._path(key))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        self._do("writing", key, lambda: self._write(self._path(key), data))

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{self.uri(key)}: not JSON ({exc})") from None

    def write_json(self, key: str, data: Any) -> None:
        self.write_bytes(key, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def _read(self, path: str) -> bytes | None:
        from pyarrow.fs import FileType

        if self.fs.get_file_info(path).type == FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as src:
            return bytes(src.read())

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as dst:  # one PUT (or a multipart upload completed at close)
            dst.write(data)


def _digest(path: Path) -> dict[str, Any]:
    """Size and SHA-256: the same bytes give the same manifest (a learner restarted mid-publish writes what it would
    have), and a download is checked against what was uploaded."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def replace_dir(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing an older `target` whole (a rename on one filesystem, else a copy
    beside it first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.in{os.getpid()}-{uuid.uuid4().hex[:8]}")
    retired = target.with_name(f".{target.name}.old{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            source.rename(staging)
        except OSError:  # another filesystem (a node cache on its own disk): copy beside the target
            shutil.copytree(source, staging)
            shutil.rmtree(source)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
