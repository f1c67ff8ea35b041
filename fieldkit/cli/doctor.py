"""`fieldkit doctor`: what this machine offers and what a run will use; `preflight` is the same check before a demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fieldkit.cli.console import console, err_console
from fieldkit.config import RunConfig
from fieldkit.doctor import DoctorReport

STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(
    config: Annotated[Path | None, typer.Option(help="the RunConfig to check (default: the defaults)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Print this machine's CPU, memory, disk, GPU, builds, sandbox and Ray token, and what the run will use;
    exit 1 when something a run needs is missing."""
    from fieldkit.cli.config import load_config

    cfg = load_config(config) if config is not None else RunConfig.model_validate({})
    report = check_machine(cfg, str(config) if config is not None else "defaults")
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(report_table(report))
    if not report.ok:
        raise typer.Exit(1)


def preflight(cfg: RunConfig, config_name: str) -> None:
    """The doctor's checks before a run: one line when all is well (plus one per warning); the failing checks'
    advice on stderr and exit 1 otherwise."""
    report = check_machine(cfg, config_name)
    for check in report.failed():
        err_console.print(Text.assemble((f"doctor: {check.name}", "red"), f": {check.summary}. {check.advice}"))
    if not report.ok:
        err_console.print("Nothing was started. `fieldkit doctor` shows every check.", highlight=False)
        raise typer.Exit(1)
    cpu = report.machine.cpu
    console.print(
        f"doctor: ok ({cpu.arch} {' '.join(cpu.isa)}, {report.machine.cores} cores, engine {cfg.engine_dtype})",
        highlight=False,
    )
    for check in report.checks:
        if check.status == "warn":
            console.print(Text.assemble((f"doctor: {check.name}", "yellow"), f": {check.summary}. {check.advice}"))


def check_machine(cfg: RunConfig, config_name: str) -> DoctorReport:
    from fieldkit.doctor import run_doctor
    from sandbox.probe import BACKENDS, backend_problem

    return run_doctor(cfg, config_name, sandbox={name: backend_problem(name) for name in BACKENDS})


def report_table(report: DoctorReport) -> Table:
    table = Table("check", "status", "what", "advice", title=f"fieldkit doctor (config: {report.config})")
    for check in report.checks:
        status = Text(check.status, style=STYLE[check.status])
        table.add_row(check.name, status, Text(check.summary), Text(check.advice))
    return table
