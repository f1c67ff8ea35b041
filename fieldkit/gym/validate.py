"""Validation of a tasks.jsonl file: every problem with its line number, so a bad corpus is fixed in one pass.

Caught: malformed JSON, a line that is not an object, unknown fields, unknown assertion kinds, invalid regexes,
paths that escape the workspace (absolute or with `..`), unknown skills, steps outside the difficulty's band,
duplicate task ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fieldkit.gym.task import ASSERTION_KINDS, Task


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CorpusError(ValueError):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} problem(s)\n{shown}{more}")


def describe_error(err: Any) -> str:
    """One pydantic error as `dotted.field: message (value ...)`."""
    where = ".".join(str(p) for p in err["loc"]) or "<task>"
    value = err.get("input")
    if err["type"] == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag")
        return f"{where}: unknown assertion kind {tag!r}; allowed: {', '.join(ASSERTION_KINDS)}"
    if err["type"] == "union_tag_not_found":
        return f"{where}: assertion has no 'kind'; allowed: {', '.join(ASSERTION_KINDS)}"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field (value {value!r})"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    message = err["msg"].removeprefix("Value error, ")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"{where}: {message} (value {shown[:120]})"


def parse_task(line: str) -> tuple[Task | None, list[str]]:
    """One JSONL line -> the task, or the reasons it is not one."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, [f"malformed JSON at column {exc.colno}: {exc.msg}"]
    if not isinstance(data, dict):
        return None, [f"expected a JSON object, got {type(data).__name__}"]
    try:
        return Task.model_validate(data), []
    except ValidationError as exc:
        return None, [describe_error(err) for err in exc.errors()]


def validate_lines(lines: list[str]) -> tuple[list[Task], list[Problem]]:
    tasks: list[Task] = []
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        task, reasons = parse_task(line)
        problems += [Problem(number, r) for r in reasons]
        if task is None:
            continue
        if task.task_id in first_seen:
            problems.append(
                Problem(number, f"duplicate task_id {task.task_id!r} (first on line {first_seen[task.task_id]})")
            )
            continue
        first_seen[task.task_id] = number
        tasks.append(task)
    return tasks, problems


def validate_file(path: str | Path) -> tuple[list[Task], list[Problem]]:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        return [], [Problem(0, f"cannot read {path}: {exc.strerror}")]
    except UnicodeDecodeError as exc:
        return [], [Problem(0, f"{path} is not UTF-8 (byte {exc.start})")]
    # JSONL lines end at "\n" only, so line numbers are those of grep -n and sed. Universal newlines (read_text) would
    # also cut at a lone "\r" (JSON whitespace) and splitlines() at U+2028 (raw in JSON strings), misnumbering every
    # line after them; a "\r" left at a line's end is whitespace to json.loads.
    tasks, problems = validate_lines(text.split("\n"))
    if not tasks and not problems:
        problems.append(Problem(0, f"{path} holds no tasks"))
    return tasks, problems


def load_tasks(path: str | Path) -> list[Task]:
    """Every task of a tasks.jsonl file; raises CorpusError listing every problem when any line is bad."""
    tasks, problems = validate_file(path)
    if problems:
        raise CorpusError(str(path), problems)
    return tasks
