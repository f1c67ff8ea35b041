"""`fieldkit sandbox exec|backends`: run one command in a sandbox by hand, see which backends work here."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console, err_console
from fieldkit.gym.records import WorkspaceFile, WorkspaceSeed

app = typer.Typer(help="Run commands in sandboxes; list the backends this machine runs.", no_args_is_help=True)


def seed_from_dir(seed_dir: Path) -> WorkspaceSeed:
    """Every file under seed_dir: UTF-8 files as text, others as zero-filled stubs of their size (a seed holds
    no other bytes). Symlinks and special files are skipped: a seed is files only."""
    if not seed_dir.is_dir():
        raise typer.BadParameter(f"{seed_dir} is not a directory", param_hint="--seed-dir")
    files: list[WorkspaceFile] = []
    for path in sorted(seed_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(seed_dir).as_posix()
        data = path.read_bytes()
        try:
            files.append(WorkspaceFile(path=rel, content=data.decode("utf-8")))
        except UnicodeDecodeError:
            files.append(WorkspaceFile(path=rel, kind="binary-stub", size=len(data)))
    return WorkspaceSeed(files=files)


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_command(
    command: Annotated[list[str], typer.Argument(help="one shell command string, or words joined with quoting")],
    backend: Annotated[str, typer.Option(help="auto | docker | bwrap | local")] = "auto",
    seed_dir: Annotated[Path | None, typer.Option(help="directory whose files seed the workspace")] = None,
    timeout: Annotated[float, typer.Option(help="seconds before the command is killed (exit 124)")] = 10.0,
    snapshot: Annotated[bool, typer.Option(help="print the workspace snapshot after the result")] = False,
) -> None:
    """Run CMD (after `--`) in a fresh sandbox and print its ExecResult as JSON; exit 1 if the sandbox failed."""
    from sandbox import SandboxError, create_sandbox

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    line = command[0] if len(command) == 1 else shlex.join(command)
    seed = seed_from_dir(seed_dir) if seed_dir is not None else WorkspaceSeed()
    try:
        box = create_sandbox(seed, backend)
    except (SandboxError, ValueError, OSError) as exc:
        err_console.print(f"[red]sandbox:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    with box:
        result = box.exec(line, timeout)
        print(result.model_dump_json(indent=2))
        if snapshot:
            print(box.snapshot().model_dump_json(indent=2))
    if result.error is not None:
        raise typer.Exit(1)


@app.command("backends")
def backends(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Which backends work here (strongest first, the one `auto` picks marked), and why the others do not."""
    from sandbox.probe import BACKENDS, auto_backend, backend_problem

    problems = {name: backend_problem(name) for name in BACKENDS}
    auto = auto_backend()  # None: `auto` refuses to start here (local runs only when named)
    if as_json:
        print(json.dumps({"auto": auto, "backends": problems}, indent=2))
        return
    for name, problem in problems.items():
        mark = "[green]ok[/green]" if problem is None else "[red]no[/red]"
        chosen = "  [bold](auto)[/bold]" if name == auto else ""
        console.print(f"{mark} {name}{chosen}" + (f": {problem}" if problem else ""), highlight=False)
    if auto is None:
        console.print("[red]auto refuses to start here[/red]: no isolating backend (--backend local runs unisolated)")
