"""Oracle validation: a task is data only when its reference solution, run in a real sandbox, passes every assertion.

The gym never imports a sandbox: whoever validates passes a Runner (the CLI builds one from `sandbox`). A task also
fails validation when the untouched seed already passes it (the do-nothing agent would score), or when an oracle
command exits non-zero (the solution is not what the task says).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import Field

from fieldkit.gym.grader import floor_grade, grade
from fieldkit.gym.records import ExecResult, GradeResult, Record, WorkspaceSeed, WorkspaceSnapshot
from fieldkit.gym.task import Task


class OracleRun(Record):
    """What running a command list in a fresh sandbox seeded from a task produced."""

    results: list[ExecResult]
    snapshot: WorkspaceSnapshot


# (seed, commands) -> OracleRun: create a sandbox from the seed, exec each command in order, snapshot, close.
Runner = Callable[[WorkspaceSeed, list[str]], OracleRun]


class OracleVerdict(Record):
    task_id: str
    ok: bool
    problems: list[str] = Field(default_factory=list)
    grade: GradeResult | None = None


def check_task(task: Task, runner: Runner) -> OracleVerdict:
    problems: list[str] = []
    if not task.reference_solution:
        return OracleVerdict(task_id=task.task_id, ok=False, problems=["no reference_solution to run"])
    untouched = floor_grade(task)
    if untouched.passed:
        problems.append("the untouched seed already passes every assertion")
    try:
        run = runner(task.workspace_seed, list(task.reference_solution))
    except Exception as exc:  # a sandbox that cannot start: report it against the task, keep validating the rest
        return OracleVerdict(task_id=task.task_id, ok=False, problems=[f"runner failed: {exc}"])
    for command, result in zip(task.reference_solution, run.results, strict=False):
        if result.error or result.exit_code != 0:
            why = result.error or (result.stderr.strip() or result.stdout.strip())[:200]
            problems.append(f"oracle command {command!r} exited {result.exit_code}: {why}")
    graded = grade(task, run.snapshot)
    problems += [
        f"assertion {a.kind}({a.path}) failed after the oracle: {a.detail}" for a in graded.assertions if not a.passed
    ]
    return OracleVerdict(task_id=task.task_id, ok=not problems, problems=problems, grade=graded)


def check_tasks(tasks: Sequence[Task], runner: Runner, workers: int = 4) -> Iterator[OracleVerdict]:
    """Verdicts in task order; up to `workers` sandboxes at once (the runner must be thread-safe)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from pool.map(lambda t: check_task(t, runner), tasks)
