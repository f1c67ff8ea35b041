"""`fieldkit gym build|validate|grade|parse-action|synth`: the ClawGym corpus from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fieldkit.cli.console import console, err_console

if TYPE_CHECKING:
    from fieldkit.gym.oracle import OracleVerdict, Runner
    from fieldkit.gym.task import Task

app = typer.Typer(help="ClawGym: build, validate and grade tasks; parse agent replies.", no_args_is_help=True)

BACKEND_HELP = "sandbox for the oracle runs: auto (docker > bwrap > local), docker, bwrap or local"


def _check_with_progress(tasks: list[Task], runner: Runner, workers: int) -> list[OracleVerdict]:
    from fieldkit.gym.oracle import check_tasks
    from fieldkit.progress import Phase

    verdicts = []
    # on stderr: `--json` keeps stdout to the summary; transient: the summary line says what came of it
    with Phase("building the corpus: running each task's oracle", console=err_console, transient=True) as progress:
        for verdict in check_tasks(tasks, runner, workers):
            verdicts.append(verdict)
            progress(len(verdicts), len(tasks))
    return verdicts


@app.command("build")
def build(
    out: Annotated[Path, typer.Option(help="corpus directory: tasks.jsonl and split.json go here")],
    per_persona: Annotated[int, typer.Option(help="tasks per persona (8 personas)")] = 25,
    seed: Annotated[int, typer.Option(help="seeds the workspaces, the task choices and the split")] = 0,
    train: Annotated[int, typer.Option(help="tasks in the training split (rollouts)")] = 42,
    validation: Annotated[int, typer.Option(help="tasks in the validation split (gates); the rest are test")] = 40,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    workers: Annotated[int, typer.Option(help="sandboxes at once for the oracle runs")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Generate the corpus, prove every task by running its reference solution in a sandbox, write it."""
    from collections import Counter

    from fieldkit.gym.corpus import write_corpus
    from fieldkit.gym.generator import generate_tasks
    from sandbox.runner import oracle_runner

    tasks = generate_tasks(per_persona, seed)
    if not 0 <= train <= len(tasks) or not 0 <= validation <= len(tasks) - train:
        err_console.print(
            f"[red]--train {train} and --validation {validation} must be >= 0 and sum to at most {len(tasks)}[/red]"
        )
        raise typer.Exit(2)
    verdicts = _check_with_progress(tasks, oracle_runner(backend), workers)
    failed = [v for v in verdicts if not v.ok]
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(tasks)} oracles failed; nothing written[/red]")
        for verdict in failed[:20]:
            err_console.print(
                f"  {verdict.task_id}: {'; '.join(verdict.problems)}", markup=False, highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
    try:
        split = write_corpus(out, tasks, train, validation, seed)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]", markup=False)
        raise typer.Exit(1) from exc
    summary = {
        "out": str(out),
        "tasks": len(tasks),
        "train": len(split.train),
        "validation": len(split.validation),
        "test": len(split.test),
        "assertions": sum(len(t.verifiable_assertions) for t in tasks),
        "difficulty": dict(Counter(t.difficulty for t in tasks)),
        "oracles_passed": len(verdicts),
    }
    if as_json:
        print(json.dumps(summary))
        return
    console.print(
        f"[green]ok[/green] {summary['tasks']} tasks ({summary['assertions']} assertions; "
        f"{summary['difficulty']}), every oracle passed; split {summary['train']} train / "
        f"{summary['validation']} validation / {summary['test']} test -> {out}"
    )


@app.command("migrate-split")
def migrate_split(
    corpus: Annotated[Path, typer.Option(help="corpus directory holding tasks.jsonl and a two-way split.json")],
    validation: Annotated[int, typer.Option(help="held-out tasks that become validation; the rest are test")] = 40,
) -> None:
    """Rewrite a two-way train/heldout split.json as train/validation/test: train kept, held-out divided."""
    from fieldkit.gym.corpus import SPLIT_FILE, TASKS_FILE, migrate_two_way, split_bytes
    from fieldkit.gym.validate import load_tasks
    from fieldkit.runs import atomic_write_bytes

    path = corpus / SPLIT_FILE
    try:
        split = migrate_two_way(path, load_tasks(corpus / TASKS_FILE), validation)
    except (OSError, ValueError) as exc:
        err_console.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    atomic_write_bytes(path, split_bytes(split))
    console.print(
        f"[green]ok[/green] {path}: {len(split.train)} train (kept) / {len(split.validation)} validation / "
        f"{len(split.test)} test",
        soft_wrap=True,
    )


@app.command("validate")
def validate(path: Annotated[Path, typer.Argument(help="a tasks.jsonl file")]) -> None:
    """Check every line of a tasks file; print the problems with line numbers and exit 1 on any."""
    from fieldkit.gym.validate import validate_file

    tasks, problems = validate_file(path)
    if problems:
        for problem in problems:
            err_console.print(
                f"{path}:{problem.line}: {problem.message}", markup=False, highlight=False, soft_wrap=True
            )
        err_console.print(f"[red]{len(problems)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print(f"[green]ok[/green] {path}: {len(tasks)} valid tasks")


def _load_task(path: Path, task_id: str | None) -> Task:
    from fieldkit.gym.validate import parse_task, validate_file

    if task_id is None:
        task, reasons = parse_task(path.read_text(encoding="utf-8"))
        if task is None:
            err_console.print(f"{path}: not a task: {'; '.join(reasons)}", markup=False)
            raise typer.Exit(2)
        return task
    tasks, problems = validate_file(path)
    found = next((t for t in tasks if t.task_id == task_id), None)
    if found is None:
        err_console.print(f"{path}: no valid task {task_id!r} ({len(problems)} invalid lines)", markup=False)
        raise typer.Exit(2)
    return found


@app.command("grade")
def grade(
    task: Annotated[Path, typer.Option(help="a task JSON file (or a tasks.jsonl with --task-id)")],
    workspace: Annotated[Path | None, typer.Option(help="the workspace directory to grade")] = None,
    snapshot: Annotated[Path | None, typer.Option(help="a WorkspaceSnapshot JSON file to grade instead")] = None,
    task_id: Annotated[str | None, typer.Option(help="pick this task from a tasks.jsonl")] = None,
) -> None:
    """Grade a workspace against a task's assertions; print the GradeResult as JSON (exit 1 when it fails)."""
    from fieldkit.gym.grader import grade as grade_workspace
    from fieldkit.gym.records import WorkspaceSnapshot

    if (workspace is None) == (snapshot is None):
        err_console.print("give exactly one of --workspace DIR and --snapshot FILE")
        raise typer.Exit(2)
    loaded = _load_task(task, task_id)
    if snapshot is not None:
        target: WorkspaceSnapshot | Path = WorkspaceSnapshot.model_validate_json(snapshot.read_bytes())
    elif workspace is not None and workspace.is_dir():
        target = workspace
    else:
        err_console.print(f"workspace {workspace} is not a directory")
        raise typer.Exit(2)
    result = grade_workspace(loaded, target)
    print(result.model_dump_json(indent=2))
    raise typer.Exit(0 if result.passed else 1)


@app.command("parse-action")
def parse_action_command() -> None:
    """Read a model reply on stdin and print the parsed action (command | done | parse_error) as JSON."""
    from fieldkit.gym.protocol import parse_action

    print(parse_action(sys.stdin.read()).model_dump_json())


@app.command("synth")
def synth(
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")],
    out: Annotated[Path, typer.Option(help="JSONL file for the kept tasks")],
    model: Annotated[str | None, typer.Option(help="model name (default: the first the server lists)")] = None,
    per_persona: Annotated[int, typer.Option(help="drafts asked per persona")] = 2,
    seed: Annotated[int, typer.Option(help="seeds the workspaces and the sampling")] = 0,
    persona: Annotated[list[str] | None, typer.Option(help="only these personas (repeatable)")] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.7,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    api_key_env: Annotated[str, typer.Option(help="environment variable holding the API key")] = "OPENAI_API_KEY",
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Ask an LLM for persona tasks (schema-constrained JSON); keep only those whose oracle passes."""
    import os

    from fieldkit.client import ChatClient
    from fieldkit.gym.corpus import task_lines
    from fieldkit.gym.synth import synthesise
    from fieldkit.runs import atomic_write_bytes
    from sandbox.runner import oracle_runner

    with ChatClient(base_url, model, api_key=os.environ.get(api_key_env)) as client:
        report = synthesise(client, oracle_runner(backend), per_persona, seed, persona, temperature)
    atomic_write_bytes(out, task_lines(report.kept))
    if as_json:
        kept = [t.task_id for t in report.kept]
        print(json.dumps({"kept": kept, "rejected": [r.model_dump() for r in report.rejected]}))
        return
    console.print(f"kept {len(report.kept)} task(s) -> {out}; rejected {len(report.rejected)}")
    for rejection in report.rejected:
        console.print(f"  {rejection.task_id} [{rejection.stage}]: {rejection.reason[:200]}", markup=False)
