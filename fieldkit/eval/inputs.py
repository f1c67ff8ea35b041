"""What an evaluation reads from disk: Episode JSONL files and the task file's persona of each task.

The report is rebuilt from these files alone. Every problem names the file and line, or the task and episode ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from fieldkit.gym.records import Episode

LIST_LIMIT = 20  # ids named in one error message before "... and N more"


class EvalInputError(ValueError):
    """Episodes or tasks that cannot be evaluated as given; the message names the paths, lines or ids."""


def name_ids(ids: Iterable[str]) -> str:
    ordered = sorted(set(ids))
    shown = ", ".join(ordered[:LIST_LIMIT])
    return shown + (f" ... and {len(ordered) - LIST_LIMIT} more" if len(ordered) > LIST_LIMIT else "")


def episode_files(path: Path) -> list[Path]:
    """A JSONL file, or every *.jsonl under a directory (sorted, so the order is the same on every machine)."""
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise EvalInputError(f"{path}: no *.jsonl episode files in this directory")
        return files
    if not path.exists():
        raise EvalInputError(f"{path}: no such episode file")
    return [path]


def load_episodes(path: Path) -> list[Episode]:
    """Episodes from a JSONL file or a directory of them; a malformed line stops the load, naming file and line."""
    episodes: list[Episode] = []
    for file in episode_files(path):
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    episodes.append(Episode.model_validate_json(line))
                except ValidationError as exc:
                    problems = "; ".join(
                        f"{'.'.join(str(p) for p in err['loc']) or '<line>'}: {err['msg']}" for err in exc.errors()[:3]
                    )
                    raise EvalInputError(f"{file}:{number}: not an Episode record: {problems}") from exc
    return episodes


def load_personas(tasks_path: Path) -> dict[str, str]:
    """task_id -> persona role, read from a ClawGym tasks.jsonl (only `task_id` and `persona.role` are needed)."""
    personas: dict[str, str] = {}
    try:
        text = tasks_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalInputError(f"{tasks_path}: cannot read the task file: {exc.strerror}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            task = json.loads(line)
            task_id, role = task["task_id"], task["persona"]["role"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise EvalInputError(f"{tasks_path}:{number}: a task needs task_id and persona.role ({exc!r})") from exc
        if not isinstance(task_id, str) or not isinstance(role, str):
            raise EvalInputError(f"{tasks_path}:{number}: task_id and persona.role must be strings")
        personas[task_id] = role
    return personas


def load_floors(tasks_path: Path) -> dict[str, dict[str, int]] | None:
    """task_id -> assertion kind -> assertions the untouched seed passes, when the file holds whole ClawGym tasks
    (their workspace seeds); None when it does not (a file of ids and personas only)."""
    from fieldkit.eval.outcomes import task_floors
    from fieldkit.gym.validate import validate_file

    tasks, problems = validate_file(tasks_path)
    return None if problems or not tasks else task_floors(tasks)
