"""Loaded by every Python process of the multi-node test (its nodes' PYTHONPATH names this directory): records each
file or directory the process opens or lists under any node's scratch directory, to
$FIELDKIT_AUDIT_LOG/<node>-<pid>.log, one `event<TAB>path` per line. The test then checks that no process of one
node touched another node's scratch directory. Only processes with the audit variables set record anything."""

from __future__ import annotations

import os
import sys

_ROOTS = tuple(r for r in os.environ.get("FIELDKIT_AUDIT_ROOTS", "").split(os.pathsep) if r)
_LOG = os.environ.get("FIELDKIT_AUDIT_LOG")
_NODE = os.environ.get("FIELDKIT_AUDIT_NODE", "unknown")
_EVENTS = {"open", "os.listdir", "os.scandir", "shutil.copytree", "os.rename", "shutil.rmtree"}


def _install() -> None:
    busy = False
    log = os.path.join(_LOG or "", f"{_NODE}-{os.getpid()}.log")

    def hook(event: str, args: tuple) -> None:
        nonlocal busy
        if busy or event not in _EVENTS or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if not path.startswith(_ROOTS):
            return
        busy = True  # the log's own open must not be recorded (nor recurse)
        try:
            with open(log, "a") as out:
                out.write(f"{event}\t{path}\n")
        finally:
            busy = False

    sys.addaudithook(hook)


if _ROOTS and _LOG:
    _install()
