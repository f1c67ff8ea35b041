"""What a persona template builds: a seeded workspace, and task drafts over it.

A persona module (one per persona, beside this file) provides `ROLE`, `build(rng) -> world` (a workspace plus the
facts its recipes need: which files are stray, which lines a grep finds) and `RECIPES`, recipe functions
`(world, rng) -> Draft` ordered easy -> hard. The generator turns a draft into a Task; the oracle check proves it.
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed
from fieldkit.gym.task import Assertion, FileContentsMatchRegex


class Workspace:
    """An ordered map of path -> seed file, built by a persona template."""

    def __init__(self) -> None:
        self.files: dict[str, WorkspaceFile] = {}

    def text(self, path: str, content: str) -> str:
        self.files[path] = WorkspaceFile(path=path, kind="text", content=content)
        return path

    def stub(self, path: str, size: int) -> str:
        self.files[path] = WorkspaceFile(path=path, kind="binary-stub", size=size)
        return path

    def content(self, path: str) -> str:
        return self.files[path].content or ""

    def lines(self, path: str) -> list[str]:
        return self.content(path).splitlines()

    def under(self, directory: str, suffix: str = "") -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return sorted(p for p in self.files if p.startswith(prefix) and p.endswith(suffix))

    def marker(self, path: str) -> str:
        """A line of the file that no other seeded file contains, to prove content arrived intact."""
        others = [f.content or "" for p, f in self.files.items() if p != path]
        candidates = [line.strip() for line in self.lines(path) if len(line.strip()) >= 8]
        for line in candidates:
            if not any(line in other for other in others):
                return line
        if candidates:
            return candidates[0]
        raise ValueError(f"{path} has no line long enough to serve as a content marker")

    def seed(self) -> WorkspaceSeed:
        return WorkspaceSeed(files=[self.files[p] for p in sorted(self.files)])


@dataclass
class Draft:
    """A task before it has an id and persona: the instruction, the oracle commands and the assertions."""

    intent: str
    commands: list[str]
    assertions: list[Assertion]
    skills: list[str]
    # Paths the task reads and writes: no part of a composite may write what another part reads or writes.
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


def q(*words: str) -> str:
    """Shell-quote each word (a no-op for plain paths) and join them."""
    return " ".join(shlex.quote(w) for w in words)


def absent(path: str, text: str) -> FileContentsMatchRegex:
    """Matches only when `text` does not occur in the file (there is no 'must not contain' primitive)."""
    if not text.strip():
        raise ValueError("an absence check needs non-blank text")
    return FileContentsMatchRegex(path=path, regex=r"\A(?![\s\S]*" + re.escape(text) + ")")


def sed_expression(old: str, new: str, every: bool = False) -> str:
    """`s/old/new/` with both sides escaped for GNU sed (old as a literal BRE)."""
    old_escaped = re.sub(r"([\\/.*\[\]^$])", r"\\\1", old)
    new_escaped = re.sub(r"([\\/&])", r"\\\1", new)
    return f"s/{old_escaped}/{new_escaped}/{'g' if every else ''}"


def pick(rng: random.Random, items: Sequence[Any], k: int) -> list[Any]:
    """k distinct items in their original order (stable output for the same seed)."""
    chosen = set(rng.sample(range(len(items)), k))
    return [item for i, item in enumerate(items) if i in chosen]


def listing(paths: Sequence[str]) -> str:
    quoted = [f"`{p}`" for p in paths]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"
