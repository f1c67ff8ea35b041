"""`fieldkit demo`: what `make demo` runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console

DEMO_CONFIG = Path("deploy/configs/demo-cpu.yaml")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct non-negative integers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 0,1,2") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise typer.BadParameter(f"{text!r}: expected distinct non-negative integers, e.g. 0,1,2")
    return seeds


def demo(
    config: Annotated[Path, typer.Option(help="the demo's RunConfig")] = DEMO_CONFIG,
    smoke: Annotated[bool, typer.Option(help="only start Ray, build the tiny model and generate once")] = False,
    seeds: Annotated[
        str | None, typer.Option(help="run the demo once per seed, e.g. 0,1,2 (default: the config's seed)")
    ] = None,
    full_test: Annotated[bool, typer.Option(help="score the whole test split, not eval.test_limit tasks")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON summary line per seed")] = False,
    readme: Annotated[
        Path | None, typer.Option(help="then render these runs' tables into this README's demo section")
    ] = None,
    verbose: Annotated[
        bool, typer.Option(help="Ray's, vLLM's and the actors' logs here, not in runs/<run>/logs/")
    ] = False,
) -> None:
    """Train an agent on embedded defaults; show base / SFT / RL on test tasks (see README: the demo)."""
    from fieldkit.cli.doctor import preflight
    from fieldkit.progress import widen_when_piped

    widen_when_piped()

    if smoke:
        from fieldkit.config import RunConfig
        from services.smoke import run_smoke

        preflight(RunConfig.model_validate({}), "defaults")  # what run_smoke runs
        with console.status("starting Ray and the vLLM CPU engine"):
            console.print_json(data=run_smoke())
        return
    from fieldkit.cli.config import load_config
    from fieldkit.cli.eval import headline_table, write_readme_tables
    from fieldkit.cli.gym import build
    from services.demo import run_demo

    cfg = load_config(config)
    preflight(cfg, str(config))  # stops here, with the advice, when this machine lacks what the run needs
    if not (cfg.paths.corpus_dir / "tasks.jsonl").exists():
        build(out=cfg.paths.corpus_dir)
    summaries = []
    for seed in parse_seeds(seeds) if seeds is not None else [cfg.seed]:
        result = run_demo(cfg.model_copy(update={"seed": seed}), full_test=full_test, quiet=not verbose)
        console.print(headline_table(result.comparison))
        console.print(
            f"seed {seed}: report and lineage card {result.report_dir}  |  Ray dashboard: {result.dashboard_url}  |  "
            f"took {result.wall_s / 60:.1f} min",
            soft_wrap=True,
        )
        summaries.append(result.summary)
    if readme is not None:
        write_readme_tables([cfg.paths.runs_dir / s["run"] for s in summaries], readme)
        console.print(f"{readme}: demo section rendered from {len(summaries)} run(s)")
    if as_json:
        for summary in summaries:
            print(json.dumps(summary))
