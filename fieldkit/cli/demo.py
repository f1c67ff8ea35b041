"""`fieldkit demo`: what `make demo` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fieldkit.cli.console import console

DEMO_CONFIG = Path("deploy/configs/demo-cpu.yaml")


def demo(
    config: Annotated[Path, typer.Option(help="the demo's RunConfig")] = DEMO_CONFIG,
    smoke: Annotated[bool, typer.Option(help="only start Ray, build the tiny model and generate once")] = False,
) -> None:
    """Train an agent on embedded defaults and show base / SFT / RL on held-out tasks (see README: the demo)."""
    if smoke:
        from services.smoke import run_smoke

        with console.status("starting Ray and the vLLM CPU engine"):
            console.print_json(data=run_smoke())
        return
    from fieldkit.cli.config import load_config
    from fieldkit.cli.eval import headline_table
    from fieldkit.cli.gym import build
    from services.demo import run_demo

    cfg = load_config(config)
    if not (cfg.paths.corpus_dir / "tasks.jsonl").exists():
        build(out=cfg.paths.corpus_dir)
    result = run_demo(cfg)
    console.print(headline_table(result.comparison))
    console.print(result.card)
    console.print(
        f"report: {result.report_dir}  |  Ray dashboard: {result.dashboard_url}  |  took {result.wall_s / 60:.1f} min"
    )
