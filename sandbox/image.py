"""The sandbox's root filesystem, assembled from this host's own binaries, and the Docker image made from it.

Why host binaries rather than a debootstrap'd Debian: it needs no network at all (no registry, no Debian mirror),
builds in about a second, works on any glibc Linux host, and holds only what the agent's action space needs
(ClawGym's skills are file and shell.* commands; the protocol forbids network tools): bash and sh, GNU coreutils,
findutils, grep, sed, gawk, plus diffutils, tar, gzip and getent where the host has them. No package manager, no
compiler, no network client, no setuid binary (setuid/setgid bits are stripped on copy). Each command is copied
with the shared libraries `ldd` lists and the dynamic loader; symlinks on the way (merged /usr, /etc/alternatives)
are recreated as symlinks, so `awk` still resolves to gawk.

The same directory is the bwrap backend's read-only root and the Docker image's only layer (`FROM scratch`), so
both isolating backends run commands against identical files. Both are cached, keyed by a hash of every file that
goes in: a host upgrade of bash or glibc gives a new key and a rebuild, an unchanged host reuses the cache.
Cache: $FIELDKIT_SANDBOX_CACHE, else /var/cache/fieldkit-sandbox as root, else ~/.cache/fieldkit-sandbox.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from sandbox.base import SandboxError
from sandbox.limits import RLIMITS_SCRIPT, RLIMITS_SCRIPT_IN_IMAGE

BUILDER_VERSION = "2"  # bump when the layout below changes, so caches keyed by file hashes alone are rebuilt
SANDBOX_UID = 65_532  # the user commands run as inside a sandbox (distroless's "nonroot" number)
KEEPALIVE_UID = 65_533  # docker's long-running pid 1 children: a uid the sandbox user cannot signal
SEARCH_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # the system's tools, never a virtualenv's or pyenv's shims

REQUIRED_COMMANDS = (
    "bash sh cat ls cp mv rm mkdir rmdir touch ln chmod head tail wc sort uniq cut tr tee echo printf pwd "
    "basename dirname realpath readlink stat du df date env sleep true false test [ expr seq yes id whoami "
    "md5sum sha1sum sha256sum base64 od comm join paste split fold fmt nl tac shuf truncate mktemp timeout nproc "
    "uname printenv install dd numfmt csplit expand unexpand sum cksum nohup "
    "find xargs grep sed gawk awk"
).split()
SHELL_PATHS = ("/bin/bash", "/bin/sh")  # the paths scripts and our own wrapper run (via /bin -> usr/bin if merged)
OPTIONAL_COMMANDS = "egrep fgrep diff cmp diff3 sdiff tar gzip gunzip zcat getent setsid".split()

ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/workspace:/bin/bash\n"
        f"keepalive:x:{KEEPALIVE_UID}:{KEEPALIVE_UID}:keepalive:/nonexistent:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "etc/group": f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nkeepalive:x:{KEEPALIVE_UID}:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    RLIMITS_SCRIPT_IN_IMAGE.lstrip("/"): RLIMITS_SCRIPT,
}
EMPTY_DIRS = {"workspace": 0o755, "tmp": 0o1777, "proc": 0o555, "dev": 0o755, "sys": 0o555, "usr/local/bin": 0o755}
DOCKERFILE = f"""\
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME=/workspace TMPDIR=/tmp
USER {SANDBOX_UID}:{SANDBOX_UID}
WORKDIR /workspace
"""
LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def cache_dir() -> Path:
    if env := os.environ.get("FIELDKIT_SANDBOX_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/fieldkit-sandbox")
    return Path.home() / ".cache" / "fieldkit-sandbox"


def _commands() -> list[str]:
    found = list(SHELL_PATHS)
    for name in REQUIRED_COMMANDS + OPTIONAL_COMMANDS:
        path = shutil.which(name, path=SEARCH_PATH)
        if path is None and name in REQUIRED_COMMANDS:
            raise SandboxError(f"the sandbox image needs `{name}` on this host (apt-get install gawk findutils)")
        if path is not None:
            found.append(path)
    return found


def _host_files(commands: list[str]) -> list[str]:
    """Every host path the rootfs needs: the commands and the libraries and loader they load (one ldd call)."""
    binaries = sorted({os.path.realpath(path) for path in commands})
    ldd = subprocess.run(["ldd", *binaries], capture_output=True, text=True)  # exit 1 if any is a script: fine
    return sorted(set(commands) | set(LDD_PATH.findall(ldd.stdout)))


def _stat_signature(paths: list[str]) -> list[list[int | str]]:
    """What a cache hit checks instead of hashing contents: path, size, mtime and inode of every host file."""
    signature: list[list[int | str]] = []
    for path in paths:
        info = os.stat(path)
        signature.append([path, info.st_size, info.st_mtime_ns, info.st_ino])
    return signature


def _cached_key(commands: list[str]) -> str | None:
    """The key of a build whose host files all still have the size, mtime and inode recorded at build time.

    Finding the libraries takes an `ldd` over ~90 binaries (seconds on a busy box); this check takes ~1 ms.
    """
    pointer = cache_dir() / "by-commands" / _commands_digest(commands)
    try:
        key = pointer.read_text().strip()
        recorded = json.loads((cache_dir() / key / "host-files.json").read_text())
        current = _stat_signature([entry[0] for entry in recorded])
    except (OSError, ValueError):
        return None
    return key if current == recorded and (cache_dir() / key / "rootfs").is_dir() else None


def _commands_digest(commands: list[str]) -> str:
    text = json.dumps([BUILDER_VERSION, _stat_signature(commands)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mirror(host_path: str, root: Path, depth: int = 0) -> None:
    """Recreate host_path under root: each symlink on the way as the same symlink, the file itself as a copy."""
    if depth > 16:
        raise SandboxError(f"symlink loop while copying {host_path} into the sandbox image")
    parts = PurePosixPath(host_path).parts[1:]
    for index in range(len(parts)):
        prefix = "/" + "/".join(parts[: index + 1])
        dest = root / prefix.lstrip("/")
        if os.path.islink(prefix):
            target = os.readlink(prefix)
            if not dest.is_symlink():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(target)
            rest = "/".join(parts[index + 1 :])
            resolved = os.path.normpath(os.path.join(os.path.dirname(prefix), target, rest))
            _mirror(resolved, root, depth + 1)
            return
    dest = root / host_path.lstrip("/")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_path, dest)
        os.chmod(dest, os.stat(host_path).st_mode & 0o777 & ~0o6000)  # no setuid/setgid binary inside


def _content_key(host_files: list[str]) -> str:
    digest = hashlib.sha256(f"{BUILDER_VERSION}\n{DOCKERFILE}\n{sorted(ETC_FILES.items())}\n".encode())
    for path in host_files:
        digest.update(f"{path}\0{os.path.realpath(path)}\0".encode())
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


@functools.cache
def build_rootfs() -> Path:
    """The cached rootfs directory (built on first use). Returns <cache>/<key>/rootfs."""
    commands = _commands()
    key = _cached_key(commands)
    if key is None:
        host_files = _host_files(commands)
        key = _content_key(host_files)
        if not (cache_dir() / key / "rootfs").is_dir():
            _build(key, host_files)
        pointer = cache_dir() / "by-commands" / _commands_digest(commands)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(key)
    return cache_dir() / key / "rootfs"


def _build(key: str, host_files: list[str]) -> None:
    final = cache_dir() / key
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(final.parent, 0o755)  # bwrap's unprivileged sandbox uid must reach the rootfs
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    root = staging / "rootfs"
    root.mkdir()
    for path in host_files:
        _mirror(path, root)
    for rel, text in ETC_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel, mode in EMPTY_DIRS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(root / rel, mode)
    (staging / "Dockerfile").write_text(DOCKERFILE)
    (staging / "host-files.json").write_text(json.dumps(_stat_signature(host_files)))
    os.chmod(staging, 0o755)
    try:
        staging.rename(final)
    except OSError:  # another process built the same key first: use theirs
        shutil.rmtree(staging)


def image_tag() -> str:
    return f"fieldkit-sandbox:{build_rootfs().parent.name}"


def ensure_image(client: object) -> str:
    """The Docker image for the current rootfs, built offline (FROM scratch) if the engine lacks it. Its tag."""
    import docker

    assert isinstance(client, docker.DockerClient)
    tag = image_tag()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        client.images.build(path=str(build_rootfs().parent), tag=tag, rm=True, forcerm=True, pull=False)
    return tag
