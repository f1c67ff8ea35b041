"""The demo: one command that trains an agent through the real mesh and shows whether it learned.

On embedded defaults (local Ray, the vLLM CPU engine, the strongest sandbox, SQLite): warm-start LoRA with SFT on
oracle transcripts that never stop (as the reference's SFT corpus), run GRPO with the turn-penalised shaped reward,
gates on the validation split choosing the checkpoint, and evaluate base, SFT (adapter v0) and RL (the adapter the
run chose: its best validation gate, runs/<run>/best) on the same test tasks, a fixed persona-stratified subset of
the test split (`eval.test_limit`; all of it with `full_test`). Base and SFT are scored on test right after the SFT
warm start, while v0 is certainly on disk (retention may delete it later); the run itself never reads a test
episode, so nothing chosen on validation is reported on it. When no RL gate beat the SFT gate on validation, the run
chose v0 and the RL column is the SFT adapter's episodes. Writes the report, summary.json and the lineage card
(card.md) under runs/<run>/report/ and returns the matched table and the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from rich import get_console

from fieldkit.config import RunConfig
from fieldkit.eval import Comparison, compare, task_floors, write_report
from fieldkit.eval.summary import SUMMARY_FILE, demo_summary
from fieldkit.gym.corpus import load_corpus, stratified_subset
from fieldkit.gym.records import Episode
from fieldkit.runs import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from fieldkit.training.lora_model import resolve_model_path
from fieldkit.training.records import AdapterRef
from services.cluster import connect
from services.logs import console_says_where, quiet_driver
from services.mesh import Mesh, episode_specs, run_episodes, start_mesh
from services.serve.adapters import REF_FILE
from services.train import TrainingRun

console = get_console()  # rich's one stdout console, shared with the progress bars


@dataclass(frozen=True)
class DemoResult:
    comparison: Comparison
    report_dir: Path
    dashboard_url: str
    wall_s: float
    summary: dict[str, Any]


def run_demo(cfg: RunConfig, *, full_test: bool = False, quiet: bool = False) -> DemoResult:
    """`quiet`: Ray's, vLLM's and the actors' logs go under runs/<run>/logs/ instead of the console (services.logs)."""
    started = time.perf_counter()
    # every demo is a new run (a second `make demo` must not trip over the first one's checkpoints)
    cfg = cfg.model_copy(update={"run_name": f"{cfg.run_name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"})
    log_dir = quiet_driver(cfg.run_dir / "logs") if quiet else None
    cluster = connect(cfg.resources.ray_address, log_dir=log_dir)
    if log_dir is not None:
        console_says_where(log_dir, cluster.dashboard_url)
    tasks, split = load_corpus(cfg.paths.corpus_dir)
    by_id = {t.task_id: t for t in tasks}
    roles = {t.task_id: t.persona.role for t in tasks}
    test_ids = stratified_subset(split.test, roles, None if full_test else cfg.eval.test_limit, "test")
    mesh = start_mesh(cfg)
    run = TrainingRun(cfg, mesh, by_id, split.train, split.validation)
    first_step = run.start(resume=False)
    episodes = _test_episodes(run, {"base": None, "sft": _checkpoint_adapter(run, 0)}, test_ids)
    outcome = run.run(first_step)
    console.print(f"[bold green]{cfg.run_name}: {outcome}[/bold green]")
    rl_step = _chosen_gate(run)
    if rl_step == 0:
        episodes["rl"] = episodes["sft"]
        atomic_write_jsonl(run.dir.test_episodes("rl"), episodes["rl"])
    else:
        episodes.update(_test_episodes(run, {"rl": _chosen_adapter(run)}, test_ids))
    comparison = compare(
        episodes,
        roles,
        baseline="sft",
        floors=task_floors(by_id[i] for i in test_ids),
        split="test",
        seed=cfg.seed,
    )
    report_dir = cfg.run_dir / "report"
    write_report(comparison, report_dir, run.lineage.trials(cfg.run_name))
    mesh.shutdown()
    atomic_write_bytes(report_dir / "card.md", run.lineage.card(cfg.run_name).encode())
    wall_s = time.perf_counter() - started
    summary = demo_summary(
        comparison,
        seed=cfg.seed,
        wall_s=wall_s,
        run=cfg.run_name,
        rl_step=rl_step,
        validation_tasks=len(run.validation),
        prior_accuracy=_prior_accuracy(cfg),
    )
    atomic_write_json(report_dir / SUMMARY_FILE, summary)
    return DemoResult(comparison, report_dir, cluster.dashboard_url, wall_s, summary)


def _prior_accuracy(cfg: RunConfig) -> dict[str, float] | None:
    """What the tiny agent's build measured of its prior on fresh chores (None for a model without a prior)."""
    record = Path(resolve_model_path(cfg.model, cfg.paths.models_dir)) / "fieldkit_spec.json"  # cached: no build
    return json.loads(record.read_text()).get("prior_accuracy") if record.exists() else None


def _chosen_gate(run: TrainingRun) -> int:
    """The step of the gate whose adapter the run chose (runs/<run>/best): the last gate that beat every gate before
    it on validation (status keep), or the step-0 gate when none did."""
    gates = [t for t in run.lineage.trials(run.cfg.run_name) if t.kind == "validation-gate"]
    return max((t.step or 0 for t in gates if t.status == "keep"), default=0)


def _checkpoint_adapter(run: TrainingRun, step: int) -> AdapterRef:
    """The adapter checkpoint `step` serves (the one the gate of that step scored)."""
    state = run.store.storage.read_json(f"{run.store.checkpoint(step)}/state.json")
    if state["adapter"] is None:
        raise RuntimeError(f"checkpoint {step} of {run.cfg.run_name} holds no adapter")
    return AdapterRef.model_validate(state["adapter"])


def _chosen_adapter(run: TrainingRun) -> AdapterRef:
    """The run's chosen adapter, from its own copy at <run>/best in run storage (never retired)."""
    storage = run.store.storage
    ref = AdapterRef.model_validate(storage.read_json(f"{run.store.best}/{REF_FILE}"))
    return ref.model_copy(update={"path": storage.uri(run.store.best)})


def _serve(mesh: Mesh, ref: AdapterRef) -> None:
    """Make sure the policy server serves `ref` (a restarted server reloads only its newest adapters)."""
    if ref.name not in {a.name for a in ray.get(mesh.policy.adapters.remote())}:
        ray.get(mesh.policy.load_adapter.remote(ref))


def _test_episodes(
    run: TrainingRun, adapters: dict[str, AdapterRef | None], test_ids: list[str]
) -> dict[str, list[Episode]]:
    """Each policy once on each test task, at evaluation temperature, with the same sampling seeds (paired); all
    policies' episodes run as one batch over the workers, and each policy's are written before use."""
    specs = []
    for label, ref in adapters.items():
        if ref is not None:
            _serve(run.mesh, ref)
        specs.append(
            episode_specs(
                [run.tasks[i] for i in test_ids],
                k=1,
                adapter=ref.name if ref else None,
                temperature=run.cfg.eval.temperature,
                seed=run.cfg.seed,
                prefix=f"test-{label}",
            )
        )
    done = run_episodes(run.mesh, [s for group in specs for s in group], f"{', '.join(adapters)} on the test split")
    episodes = {}
    for i, label in enumerate(adapters):
        episodes[label] = done[i * len(test_ids) : (i + 1) * len(test_ids)]
        atomic_write_jsonl(run.dir.test_episodes(label), episodes[label])
    return episodes
