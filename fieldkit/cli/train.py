"""`fieldkit train`: one command to train, in-process on a local Ray or submitted to a cluster as a Ray job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.config import SetOption, load_config
from fieldkit.cli.console import console, err_console

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # where `--stop` looks when no address is given (services.cluster's)


def train(
    config: Annotated[Path | None, typer.Option(help="the RunConfig YAML (deploy/configs/)")] = None,
    overrides: SetOption = None,
    resume: Annotated[bool, typer.Option(help="continue after the run's last checkpoint")] = False,
    address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="a Ray cluster's dashboard URL: submit the run there as a job (Job SDK, token auth) and follow its "
            "log (Ctrl-C detaches); without it the run goes in-process on a local Ray",
        ),
    ] = None,
    stop: Annotated[
        str | None, typer.Option(metavar="RUN", help="stop run RUN's job (or a job by its submission id) and exit")
    ] = None,
    verbose: Annotated[
        bool, typer.Option(help="Ray's, vLLM's and the actors' logs here, not in runs/<run>/logs/ (in-process)")
    ] = False,
) -> None:
    """Train: `--config FILE [--set KEY=VALUE ...] [--resume] [--address URL]`; relative paths resolve under the
    project home ($FIELDKIT_HOME, else this directory), for a job too."""
    address = address or None  # RAY_ADDRESS="" means none
    if stop is not None:
        _stop(address or DEFAULT_ADDRESS, stop)
        return
    if config is None:
        raise typer.BadParameter(
            "give the run's config, e.g. --config deploy/configs/demo-cpu.yaml", param_hint="--config"
        )
    from fieldkit.config import ConfigError
    from fieldkit.home import anchor_paths, project_home
    from fieldkit.trackers import TrackerUnavailableError, check_trackers

    home = project_home() or Path.cwd()  # a CLI never runs in Ray's copy of a working directory
    try:
        cfg = anchor_paths(load_config(config, overrides), home)
        check_trackers(cfg.logging.trackers)
    except (ConfigError, TrackerUnavailableError) as exc:
        err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    if not (cfg.paths.corpus_dir / "tasks.jsonl").exists():  # as `fieldkit demo` does: the run needs its tasks
        from fieldkit.cli.gym import build

        build(out=cfg.paths.corpus_dir)
    if address is None:
        from services.train import main

        argv = ["--config", str(config), *[f"--set={o}" for o in overrides or []]]
        raise typer.Exit(main(argv + ["--resume"] * resume + ["--verbose"] * verbose))
    _submit(address, cfg.run_name, config, overrides or [], resume, home)


def _submit(address: str, run: str, config: Path, overrides: list[str], resume: bool, home: Path) -> None:
    import logging

    from services.jobs import follow, submit_run

    logging.disable(logging.WARNING)  # Ray's packaging notes (a line per ignored file), not what a person reads
    try:
        with console.status(f"waiting for the job agent of {address}, then submitting"):
            job_id = submit_run(address, run, config, overrides, resume, home, working_dir=Path.cwd())
    finally:
        logging.disable(logging.NOTSET)
    console.print(
        f"submitted run {run} as job {job_id} to {address} (home {home}); following its log, Ctrl-C detaches",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    try:
        status = follow(address, job_id, lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    except KeyboardInterrupt:
        console.print(
            f"\ndetached; job {job_id} goes on. Follow it again: ray job logs --follow --address {address} {job_id}; "
            f"stop it: fieldkit train --stop {run} --address {address}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        return
    console.print(f"job {job_id}: {status}", markup=False, highlight=False)
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _stop(address: str, run: str) -> None:
    from services.jobs import stop_run

    stopped = stop_run(address, run)
    if not stopped:
        err_console.print(f"no pending or running job of run {run!r} on {address}", markup=False, highlight=False)
        raise typer.Exit(1)
    console.print(
        f"stopping {', '.join(stopped)} (SIGTERM, then SIGKILL after Ray's grace period)", markup=False, soft_wrap=True
    )
