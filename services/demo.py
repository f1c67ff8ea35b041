"""The demo: one command that trains an agent through the real mesh and shows whether it learned.

On embedded defaults (local Ray, the vLLM CPU engine, the strongest sandbox, SQLite): evaluate the base model on
held-out tasks, warm-start LoRA with SFT on oracle transcripts that never stop (as the reference's SFT corpus),
run GRPO with the turn-penalised shaped reward, and compare base / SFT / RL on the same held-out tasks. The SFT
column is the run's step-0 held-out gate, the RL column its best later gate (checkpoints are chosen on held-out
score only). Prints the matched table and the lineage card, and writes a report under runs/<run>/report/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from fieldkit.config import RunConfig
from fieldkit.eval import Comparison, compare, write_report
from fieldkit.gym.corpus import load_corpus
from fieldkit.gym.records import Episode
from fieldkit.runs import atomic_write_jsonl, read_episodes
from services.cluster import connect
from services.mesh import episode_specs, run_episodes, start_mesh
from services.train import GATE_METRIC, TrainingRun

console = Console()


@dataclass(frozen=True)
class DemoResult:
    comparison: Comparison
    card: str
    report_dir: Path
    dashboard_url: str
    wall_s: float


def run_demo(cfg: RunConfig) -> DemoResult:
    started = time.perf_counter()
    # every demo is a new run (a second `make demo` must not trip over the first one's checkpoints)
    cfg = cfg.model_copy(update={"run_name": f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}"})
    cluster = connect(cfg.resources.ray_address)
    tasks, split = load_corpus(cfg.paths.corpus_dir)
    by_id = {t.task_id: t for t in tasks}
    mesh = start_mesh(cfg)
    run = TrainingRun(cfg, mesh, by_id, split.train, split.heldout)
    base = _base_episodes(run)
    outcome = run.run(run.start(resume=False))
    console.print(f"[bold green]{cfg.run_name}: {outcome}[/bold green]")
    sft = read_episodes(run.dir.gate_episodes(0))
    rl_step = _best_rl_gate(run)
    rl = read_episodes(run.dir.gate_episodes(rl_step))
    personas = {t.task_id: t.persona.role for t in tasks}
    comparison = compare({"base": base, "sft": sft, f"rl@{rl_step}": rl}, personas)
    report_dir = cfg.run_dir / "report"
    write_report(comparison, report_dir, run.lineage.trials(cfg.run_name))
    mesh.shutdown()
    card = run.lineage.card(cfg.run_name)
    return DemoResult(comparison, card, report_dir, cluster.dashboard_url, time.perf_counter() - started)


def _base_episodes(run: TrainingRun) -> list[Episode]:
    """The base model (no adapter) on the held-out tasks, at evaluation temperature; written before use."""
    path = run.dir.root / "eval" / "base" / "episodes.jsonl"
    if path.exists():
        return read_episodes(path)
    specs = episode_specs(
        [run.tasks[i] for i in run.heldout],
        k=1,
        adapter=None,
        temperature=run.cfg.eval.temperature,
        seed=run.cfg.seed,
        prefix="base",
    )
    episodes = run_episodes(run.mesh, specs, "base model on held-out")
    atomic_write_jsonl(path, episodes)
    return episodes


def _best_rl_gate(run: TrainingRun) -> int:
    """The step of the best held-out gate after training began (ties: the earlier one)."""
    gates = [t for t in run.lineage.trials(run.cfg.run_name) if t.kind == "heldout-gate" and t.step]
    if not gates:
        raise RuntimeError("the run recorded no held-out gate after step 0")
    best = max(gates, key=lambda t: (t.metrics.get(GATE_METRIC) or 0.0, -(t.step or 0)))
    return int(best.step or 0)
