"""The assertion grader: a task's final workspace state -> GradeResult, with the reference semantics.

- file_exists: a file or a directory is there (a symlink counts as an entry; it is never followed).
- file_not_exists: nothing is there.
- file_contents_contain: every string occurs in the text; an empty list asks only for a readable text file.
- file_contents_match_regex: `re.search(regex, text)`.
- file_unchanged: the bytes equal the seed's (text, or the zero-filled stub); passes when the seed has no such file.
A content assertion on a missing, binary (NUL bytes or not UTF-8), oversized or symlinked file fails with the reason.
A task passes only when every assertion passes. Its score is n_passed/n_total, or 0.7*code + 0.3*rubric when the
task has rubric items and a judge's scores are given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from fieldkit.gym.records import AssertionResult, GradeResult, WorkspaceSnapshot
from fieldkit.gym.task import (
    Assertion,
    FileContentsContain,
    FileContentsMatchRegex,
    FileExists,
    FileNotExists,
    FileUnchanged,
    Task,
)
from fieldkit.gym.workspace import Unreadable, WorkspaceView, as_view, seed_snapshot

RUBRIC_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
CODE_WEIGHT = 0.7  # s_task = 0.7*s_code + 0.3*s_rubric (ClawGym's hybrid verification)


def read_text(view: WorkspaceView, path: str) -> str:
    data = view.read(path)
    if b"\x00" in data:
        raise Unreadable(f"binary file ({len(data)} bytes with NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start})") from None


def _quote_list(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(s) for s in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check(assertion: Assertion, view: WorkspaceView, seed: Mapping[str, bytes]) -> AssertionResult:
    def result(passed: bool, detail: str) -> AssertionResult:
        return AssertionResult(kind=assertion.kind, path=assertion.path, passed=passed, detail=detail)

    if isinstance(assertion, FileExists | FileNotExists):
        found = view.lookup(assertion.path)
        there = found.kind is not None
        detail = f"{found.kind} exists" if there else (found.detail or "missing")
        return result(there == isinstance(assertion, FileExists), detail)

    if isinstance(assertion, FileUnchanged):
        expected = seed.get(assertion.path)
        if expected is None:
            return result(True, "not in the seed; nothing to compare")
        try:
            data = view.read(assertion.path)
        except Unreadable as why:
            return result(False, str(why))
        if data == expected:
            return result(True, "equals the seed")
        return result(False, f"differs from the seed ({len(expected)} -> {len(data)} bytes)")

    try:
        text = read_text(view, assertion.path)
    except Unreadable as why:
        return result(False, str(why))
    if isinstance(assertion, FileContentsContain):
        missing = [s for s in assertion.must_contain if s not in text]
        if missing:
            return result(False, f"missing {len(missing)} of {len(assertion.must_contain)}: {_quote_list(missing)}")
        return result(True, f"contains all {len(assertion.must_contain)}")
    if isinstance(assertion, FileContentsMatchRegex):
        match = re.search(assertion.regex, text)
        if match is None:
            return result(False, f"no match for /{assertion.regex}/")
        return result(True, f"matched at offset {match.start()}")
    raise TypeError(f"unknown assertion {assertion!r}")


def rubric_mean(task: Task, scores: Mapping[str, float]) -> float:
    """The judge's mean over the task's rubric items; every item scored, on the five allowed levels."""
    wanted = {item.id for item in task.rubric}
    if set(scores) != wanted:
        raise ValueError(f"rubric scores for {task.task_id}: expected ids {sorted(wanted)}, got {sorted(scores)}")
    for item_id, q in scores.items():
        if q not in RUBRIC_LEVELS:
            raise ValueError(f"rubric score {item_id}={q!r} must be one of {RUBRIC_LEVELS}")
    return sum(scores.values()) / len(scores)


def grade(
    task: Task,
    workspace: WorkspaceSnapshot | str | Path | WorkspaceView,
    rubric_scores: Mapping[str, float] | None = None,
) -> GradeResult:
    """Grade a final workspace (a snapshot, a directory, or a view) against the task's assertions."""
    view = as_view(workspace)
    seed = task.seed_files()
    results = [check(a, view, seed) for a in task.verifiable_assertions]
    n_passed = sum(r.passed for r in results)
    code = n_passed / len(results)
    rubric = rubric_mean(task, rubric_scores) if task.rubric and rubric_scores is not None else None
    score = code if rubric is None else CODE_WEIGHT * code + (1 - CODE_WEIGHT) * rubric
    return GradeResult(
        passed=n_passed == len(results),
        n_passed=n_passed,
        n_total=len(results),
        assertions=results,
        score=score,
        rubric_score=rubric,
    )


def floor_grade(task: Task) -> GradeResult:
    """The grade of the untouched seeded workspace: what an agent that does nothing scores. Graded on the seed's
    snapshot, no sandbox needed; the evaluation reports per-assertion net of this floor."""
    return grade(task, seed_snapshot(task.workspace_seed))
