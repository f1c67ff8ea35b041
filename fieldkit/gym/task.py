"""The ClawGym task: an instruction, a seeded workspace, and the assertions that decide success.

Field names follow the published ClawGym task JSON (`task_id`, `persona {role, context}`, `intent`,
`workspace_seed.files[]`, `skills_required`, `verifiable_assertions[]`, `difficulty`, `estimated_steps`). Ours
adds `reference_solution` (shell commands that solve the task, one per agent turn; every generated task is
checked by running them) and optional `rubric` items scored by a judge.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fieldkit.gym.personas import skills
from fieldkit.gym.records import Record, WorkspaceSeed, check_workspace_path

Difficulty = Literal["easy", "medium", "hard"]

# The reference's bands: easy 1-3 steps, medium 4-7, hard 8+.
DIFFICULTY_STEPS: dict[str, tuple[int, int | None]] = {"easy": (1, 3), "medium": (4, 7), "hard": (8, None)}

ASSERTION_KINDS = (
    "file_exists",
    "file_not_exists",
    "file_contents_contain",
    "file_contents_match_regex",
    "file_unchanged",
)


def difficulty_for_steps(steps: int) -> Difficulty:
    if steps <= 3:
        return "easy"
    return "medium" if steps <= 7 else "hard"


class _PathAssertion(Record):
    path: str

    @field_validator("path")
    @classmethod
    def _inside_workspace(cls, path: str) -> str:
        normalised = PurePosixPath(check_workspace_path(path)).as_posix()
        if normalised == ".":
            raise ValueError(f"path {path!r} names the workspace itself, not something in it")
        return normalised


class FileExists(_PathAssertion):
    """The path is a file or a directory."""

    kind: Literal["file_exists"] = "file_exists"


class FileNotExists(_PathAssertion):
    kind: Literal["file_not_exists"] = "file_not_exists"


class FileContentsContain(_PathAssertion):
    """Every string occurs in the file's text (an empty list only asks for a readable text file)."""

    kind: Literal["file_contents_contain"] = "file_contents_contain"
    must_contain: list[str]


class FileContentsMatchRegex(_PathAssertion):
    """`re.search(regex, text)` finds a match."""

    kind: Literal["file_contents_match_regex"] = "file_contents_match_regex"
    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str) -> str:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {regex!r}: {exc}") from exc
        return regex


class FileUnchanged(_PathAssertion):
    """The file still equals its seed content (passes when the seed has no such file)."""

    kind: Literal["file_unchanged"] = "file_unchanged"


Assertion = Annotated[
    FileExists | FileNotExists | FileContentsContain | FileContentsMatchRegex | FileUnchanged,
    Field(discriminator="kind"),
]


class Persona(Record):
    role: str = Field(min_length=1)
    context: str = ""


class RubricItem(Record):
    """A qualitative criterion a judge scores q in {0, .25, .5, .75, 1}; mixed as 0.7*code + 0.3*rubric."""

    id: str = Field(min_length=1)
    description: str = Field(min_length=1)


class Task(Record):
    task_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    persona: Persona
    intent: str = Field(min_length=1)
    workspace_seed: WorkspaceSeed
    skills_required: list[str] = Field(default_factory=list)
    verifiable_assertions: list[Assertion] = Field(min_length=1)
    difficulty: Difficulty
    estimated_steps: int = Field(ge=1)
    reference_solution: list[str] = Field(default_factory=list)
    rubric: list[RubricItem] = Field(default_factory=list)

    @field_validator("skills_required")
    @classmethod
    def _known_skills(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in skills()]
        if unknown:
            raise ValueError(f"unknown skills {unknown}; known: {', '.join(skills())}")
        return names

    @field_validator("reference_solution")
    @classmethod
    def _one_line_commands(cls, commands: list[str]) -> list[str]:
        for i, command in enumerate(commands):
            if not command.strip() or "\n" in command:
                raise ValueError(f"reference_solution[{i}] must be one non-empty line (one command per turn)")
        return commands

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        low, high = DIFFICULTY_STEPS[self.difficulty]
        if self.estimated_steps < low or (high is not None and self.estimated_steps > high):
            band = f"{low}-{high}" if high else f"{low}+"
            raise ValueError(f"difficulty {self.difficulty} needs {band} estimated_steps, got {self.estimated_steps}")
        _check_seed_paths(self.workspace_seed)
        ids = [item.id for item in self.rubric]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate rubric ids in {ids}")
        return self

    def seed_files(self) -> dict[str, bytes]:
        """Seed path -> the exact bytes the workspace starts with (binary stubs are zero-filled)."""
        return {
            PurePosixPath(f.path).as_posix(): (f.content or "").encode() if f.kind == "text" else bytes(f.size or 0)
            for f in self.workspace_seed.files
        }


def _check_seed_paths(seed: WorkspaceSeed) -> None:
    """No duplicate paths, and no seeded file that another seeded file needs as its directory."""
    paths = [PurePosixPath(f.path).as_posix() for f in seed.files]
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise ValueError(f"workspace_seed has {path!r} twice")
        seen.add(path)
    for path in paths:
        for parent in PurePosixPath(path).parents:
            if parent.as_posix() in seen:
                raise ValueError(f"workspace_seed file {parent.as_posix()!r} is also the directory of {path!r}")
