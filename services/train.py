"""The training driver: what `ray job submit` runs (and `fieldkit train`, in-process or through the Job SDK).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m services.train --config deploy/configs/demo-cpu.yaml [--set KEY=VALUE ...] [--resume]

Relative paths of the config resolve under the project home ($FIELDKIT_HOME, else the current directory:
fieldkit.home), never under Ray's temporary copy of the working directory.

Per step: sample tasks from the training split (a function of seed and step), K rollouts each, graded; the episodes
are written to disk before anything uses them; advantages -> one learner step -> the new adapter version published
and hot-loaded into the policy server (verified by its probe) -> a checkpoint -> a lineage trial. Every
`eval.every_n_steps` a validation gate scores the current adapter at evaluation temperature; the run's best adapter
is chosen on validation score only (the test split is never read here: it is for the reported table). The run
stops at max_steps, or when the last group of every task of the training pool had identical rewards (the pool is
saturated and must grow). `--resume` continues after the last checkpoint; a step whose episodes were written before
a crash reuses them, so no episode is lost or run twice. SIGTERM finishes the current step's checkpoint and exits.

Pipelined (`rollout.max_staleness: 1`): step n+1's rollouts are started as soon as step n's are collected, so they
run while the learner trains on step n, on adapter n-1 (each version is its own adapter name, so an episode never
mixes two): one version stale; the loss weighs a stale turn by π_learner/π_engine, truncated or masked (TIS/MIS).

Learner calls go through `LearnerSession`: each names its step, and after a learner restart the step's update (or
the SFT warm start) is applied again before the refused call is retried. Retention keeps the newest
`checkpoint.keep_last` checkpoints and the best gate's, with the adapter versions they serve; older adapters are
unloaded from the policy server and deleted.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray
import yaml
from rich import get_console

from fieldkit.config import ConfigError, RunConfig
from fieldkit.eval import task_floors, trial_metrics
from fieldkit.gym.corpus import load_corpus, stratified_subset
from fieldkit.gym.records import Episode
from fieldkit.gym.task import Task
from fieldkit.home import anchor_paths
from fieldkit.lineage.provenance import capture_provenance
from fieldkit.overrides import load_config
from fieldkit.progress import Phase, widen_when_piped
from fieldkit.rl.batch import build_train_batch
from fieldkit.runs import (
    RunDir,
    RunStore,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    read_episodes,
    sample_tasks,
)
from fieldkit.storage import Storage, fetch_dir
from fieldkit.trackers import TrackerUnavailableError, check_trackers
from fieldkit.training.records import AdapterRef
from services.cluster import connect
from services.learner import LearnerSession
from services.logs import console_says_where, quiet_driver
from services.mesh import Mesh, collect_episodes, episode_specs, run_episodes, start_mesh, submit_episodes
from services.recorder import Recorder
from services.rollout import EpisodeSpec
from services.serve.adapters import REF_FILE

console = get_console()  # rich's one stdout console, shared with the progress bars
# Checkpoints are chosen on the validation mean reward: the objective the run trains, at evaluation temperature, on
# tasks it never trains on. Per-assertion alone ties when RL changes how an agent finishes but not what it gets
# right (the demo's tiny agent learns to stop; per-assertion stays put), and ties went to the SFT adapter, which
# never stops.
GATE_METRIC = "validation.reward"


class TrainingRun:
    def __init__(
        self, cfg: RunConfig, mesh: Mesh, tasks: dict[str, Task], train_ids: list[str], validation: list[str]
    ) -> None:
        self.cfg = cfg
        self.mesh = mesh
        self.tasks = tasks
        self.train_ids = train_ids
        roles = {task_id: task.persona.role for task_id, task in tasks.items()}
        self.validation = stratified_subset(validation, roles, cfg.eval.validation_limit, "validation")
        self.floors = task_floors(tasks[i] for i in self.validation)
        self.dir = RunDir(cfg.run_dir)  # the driver's own records: episodes, metrics, config, logs
        self.store = RunStore(Storage(cfg.storage_root, cfg.paths.node_cache), cfg.run_name)  # what every node reads
        self.provenance = capture_provenance(config=cfg)  # the machine too: the doctor's report, cheap (no probes)
        self.recorder = Recorder(cfg, self.provenance)  # lineage trials, mirrored to the experiment trackers
        self.lineage = self.recorder.lineage
        self.adapter: AdapterRef | None = None
        self.served_version = -1  # what the policy server reported serving after the last load
        self.best_metric: float | None = None
        self.best_step: int | None = None  # the step of the best gate: retention keeps its checkpoint and adapter
        self.learner = LearnerSession(mesh.learner)
        self.zero_signal: dict[str, bool] = {}  # task id -> its latest group had identical rewards
        self.stop_requested = False
        self.launched: dict[int, list[Any]] = {}  # pipelined: step -> its episodes, started while a step trains

    # ---- start / resume -------------------------------------------------------------------------------------
    def start(self, resume: bool) -> int:
        """Load the adapter to serve and return the first step to run."""
        if resume and self.store.checkpoints():
            return self._resume() + 1
        if self.dir.latest.exists() or self.store.storage.exists(self.store.latest):
            raise SystemExit(f"{self.dir.root} already holds a run: pass --resume, or choose another run_name")
        config_yaml = yaml.safe_dump(self.cfg.model_dump(mode="json")).encode()
        atomic_write_bytes(self.dir.root / "config.yaml", config_yaml)
        if self.cfg.paths.storage is not None:  # else run storage is the runs directory: the same file
            self.store.storage.write_bytes(self.store.config, config_yaml)  # what serving the run's adapters reads
        atomic_write_json(self.dir.root / "provenance.json", dataclasses.asdict(self.provenance))
        if self.cfg.sft.warm_start:
            self._warm_start()
        self._publish(0)
        self._gate(0)
        self._checkpoint(0)  # the SFT adapter and v0: what a resume or a restarted learner returns to
        return 1

    def _resume(self) -> int:
        """Continue from the newest checkpoint that loads; an unreadable one is reported and the one before used."""
        for step, key in self.store.checkpoints():
            path = self.store.storage.uri(key)
            try:
                state = self.store.storage.read_json(f"{key}/state.json")
                self.learner.load_state(f"{key}/learner")
                self._load(AdapterRef.model_validate(state["adapter"]))
            except Exception as exc:  # any fault of this checkpoint: its files, the learner's load, the probe
                console.print(f"[red]checkpoint {path} is unusable, trying the one before[/red]: {exc}")
                continue
            self.best_metric = state["best_metric"]
            self.best_step = state.get("best_step")  # absent in checkpoints written before retention
            self.zero_signal = state["zero_signal"]
            self.store.mark_latest(step)  # a learner restarted later returns here, not to the unusable one
            console.print(f"resumed {self.cfg.run_name} after step {step}: serving adapter v{self.adapter.version}")
            return step
        raise SystemExit(f"{self.dir.root}: no checkpoint loads (each one's error is above); start a new run_name")

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self, first_step: int) -> str:
        status = "failed"  # how the trackers' runs end unless the loop returns
        try:
            outcome = self._steps(first_step)
            status = "finished"
            return outcome
        finally:
            self.recorder.close(status)
            for refs in self.launched.values():  # a step that will not run: its sandboxes go back now
                for ref in refs:
                    ray.cancel(ref)

    def _steps(self, first_step: int) -> str:
        for step in range(first_step, self.cfg.max_steps + 1):
            if self.stop_requested:
                return "stopped by SIGTERM after a complete checkpoint"
            saturated = self.step(step)
            if step % self.cfg.eval.every_n_steps == 0 or step == self.cfg.max_steps or saturated:
                self._gate(step)
            self._checkpoint(step)
            if saturated:
                return f"saturated at step {step}: every training task's group had identical rewards; grow the pool"
        return f"finished {self.cfg.max_steps} steps"

    def step(self, step: int) -> bool:
        """One training step; returns True when the training pool is saturated."""
        walls: dict[str, float] = {}
        started = time.perf_counter()
        episodes = self._rollouts(step, walls)
        if self.cfg.rollout.max_staleness and step < self.cfg.max_steps and not self.stop_requested:
            self._launch(step + 1)
        groups: dict[str, list[Episode]] = defaultdict(list)
        for episode in episodes:
            if episode.stop_reason != "failed":  # a faulted episode has no trustworthy reward
                groups[episode.group_id].append(episode)
        for group in groups.values():
            self.zero_signal[group[0].task_id] = len({e.reward for e in group}) == 1
        batch = build_train_batch(list(groups.values()), self.cfg.algorithm)
        t0 = time.perf_counter()
        learner_metrics = self.learner.step(batch, step)  # {} for a batch with nothing to train on
        if learner_metrics:
            walls["train_s"] = time.perf_counter() - t0
            self._publish(step, walls)
        walls["step_s"] = time.perf_counter() - started
        metrics = {
            **episode_metrics(episodes, "train"),
            "train.reward": _mean([e.reward for e in episodes if e.reward is not None]),
            "rollout.template_mismatches": float(self._template_mismatches()),
            "rollout.stale_turn_share": stale_turn_share(episodes, step),
            "train.zero_signal_groups": float(batch.zero_signal_groups),
            "train.groups": float(batch.groups),
            **{f"learner.{k}": v for k, v in learner_metrics.items()},
            **{f"wall.{k}": v for k, v in walls.items()},
            "policy.published_version": float(self.adapter.version if self.adapter else -1),
            "policy.served_version": float(self.served_version),
        }
        atomic_write_json(self.dir.step_metrics(step), metrics)
        parent = f"step-{step - 1:04d}" if step > 1 else "gate-0000"
        status = "keep" if learner_metrics else "discard"
        self.recorder.record(
            f"step-{step:04d}", parent, "rl-step", status, step, ("train.reward", "max"), metrics, walls, self.adapter
        )
        self._show(step, metrics)
        return set(self.zero_signal) == set(self.train_ids) and all(self.zero_signal.values())

    def _template_mismatches(self) -> int:
        """Chat-template re-render mismatches the workers counted so far (reported, never patched)."""
        counts = ray.get([worker.mismatch_counts.remote() for worker in self.mesh.workers])
        return sum(sum(c.values()) for c in counts)

    def _rollouts(self, step: int, walls: dict[str, float]) -> list[Episode]:
        path = self.dir.step_episodes(step)
        if path.exists():  # written before a crash: reuse, never roll out twice
            return read_episodes(path)
        t0 = time.perf_counter()
        refs = self.launched.pop(step, None) or submit_episodes(self.mesh, self._specs(step))
        episodes = collect_episodes(refs, f"step {step} rollouts")
        atomic_write_jsonl(path, episodes)
        walls["rollout_s"] = time.perf_counter() - t0  # pipelined: only what was left to wait for
        return episodes

    def _launch(self, step: int) -> None:
        """Pipelined: start `step`'s episodes now, on the adapter serving now (unless they are already on disk)."""
        if not self.dir.step_episodes(step).exists():
            self.launched[step] = submit_episodes(self.mesh, self._specs(step))

    def _specs(self, step: int) -> list[EpisodeSpec]:
        ids = sample_tasks(self.train_ids, self.cfg.seed, step, self.cfg.rollout.tasks_per_step)
        return episode_specs(
            [self.tasks[i] for i in ids],
            k=self.cfg.rollout.group_size,
            adapter=self.adapter.name if self.adapter else None,
            temperature=self.cfg.rollout.temperature,
            seed=self.cfg.seed * 10_000 + step,
            prefix=f"s{step:04d}",
        )

    def _warm_start(self) -> None:
        """LoRA SFT on oracle transcripts of the training split; the result is adapter v0 and the KL reference."""
        from transformers import AutoTokenizer

        from fieldkit.gym.transcripts import oracle_transcript
        from fieldkit.training.sft import examples_from_chats
        from sandbox.runner import oracle_runner

        t0 = time.perf_counter()
        tasks = [self.tasks[i] for i in self.train_ids]
        runner = oracle_runner(self.cfg.sandbox.backend, self.cfg.rollout.command_timeout_s)
        runs = []
        with Phase("oracle transcripts for SFT", transient=True) as progress:
            for task in tasks:
                runs.append(runner(task.workspace_seed, task.reference_solution))
                progress(len(runs), len(tasks))
        chats = [oracle_transcript(t, r, with_stop=self.cfg.sft.with_stop) for t, r in zip(tasks, runs, strict=True)]
        tokenizer = AutoTokenizer.from_pretrained(fetch_dir(self.mesh.model_dir, self.cfg.paths.node_cache))
        with Phase("SFT warm start (optimizer steps)", transient=True) as progress:
            metrics = self.learner.warm_start(examples_from_chats(tokenizer, chats), progress)
        console.print(
            f"SFT warm start on {len(chats)} oracle transcripts: loss {metrics['sft_loss_first']:.3f} -> "
            f"{metrics['sft_loss_last']:.3f} in {time.perf_counter() - t0:.0f}s",
            soft_wrap=True,
        )
        walls = {"sft_s": time.perf_counter() - t0}
        self.recorder.record("sft", None, "sft", "keep", 0, ("sft_loss_last", "min"), metrics, walls, self.adapter)

    def _publish(self, version: int, walls: dict[str, float] | None = None) -> None:
        t0 = time.perf_counter()
        self._load(self.learner.publish(version))
        if walls is not None:
            walls["publish_s"] = time.perf_counter() - t0

    def _load(self, ref: AdapterRef) -> None:
        loaded = ray.get(self.mesh.policy.load_adapter.remote(ref))  # raises on a probe mismatch: never train blind
        self.adapter = ref
        self.served_version = loaded.version

    def _gate(self, step: int) -> None:
        """Validation evaluation of the serving adapter; the best gate's adapter is copied to runs/<run>/best."""
        path = self.dir.gate_episodes(step)
        t0 = time.perf_counter()
        if path.exists():
            episodes = read_episodes(path)
        else:
            specs = episode_specs(
                [self.tasks[i] for i in self.validation],
                k=1,
                adapter=self.adapter.name if self.adapter else None,
                temperature=self.cfg.eval.temperature,
                seed=self.cfg.seed,
                prefix=f"g{step:04d}",
            )
            episodes = run_episodes(self.mesh, specs, f"validation gate @ step {step}")
            atomic_write_jsonl(path, episodes)
        metrics = episode_metrics(episodes, "validation", self.floors)
        if metrics.get(GATE_METRIC) is None:  # every episode faulted: nothing was measured
            status, score, is_best = "crash", 0.0, False
        else:
            score = metrics[GATE_METRIC] or 0.0
            is_best = self.best_metric is None or score > self.best_metric
            status = "baseline" if step == 0 else ("keep" if is_best else "discard")
        if is_best and self.adapter is not None:
            self.best_metric = score
            self.best_step = step
            self._copy_best(self.adapter)
        parent = f"step-{step:04d}" if step else ("sft" if self.cfg.sft.warm_start else None)
        walls = {"gate_s": time.perf_counter() - t0}
        self.recorder.record(
            f"gate-{step:04d}", parent, "validation-gate", status, step, (GATE_METRIC, "max"), metrics, walls,
            self.adapter, best=is_best,
        )  # fmt: skip
        m = {key: value or 0.0 for key, value in metrics.items()}
        console.print(
            f"[bold]validation gate @ step {step}[/bold]: reward {score:.3f}, "
            f"pass {m.get('validation.task_pass', 0):.1%}, per-assertion {m.get('validation.per_assertion', 0):.1%}, "
            f"task_complete {m.get('validation.task_complete', 0):.1%}, "
            f"turns {m.get('validation.mean_turns', 0):.2f}, failed {m['validation.failed']:.0f}"
            + ("  (best)" if is_best else ""),
            soft_wrap=True,  # one line, however narrow the terminal (or a job log's 80 columns)
        )

    def _copy_best(self, adapter: AdapterRef) -> None:
        """Copy the adapter to <run>/best in run storage, storage to storage (on an object store, server-side)."""
        storage = self.store.storage
        # with its ref: `fieldkit serve --adapter runs/<run>/best` serves it with the learner's probe
        ref = adapter.model_copy(update={"path": storage.uri(self.store.best)}).model_dump_json(indent=2).encode()
        storage.copy_dir(storage.key_of(adapter.path), self.store.best, {REF_FILE: ref})

    def _checkpoint(self, step: int) -> None:
        key = self.store.checkpoint(step)
        self.learner.save_state(f"{key}/learner", step)
        state = {"step": step, "adapter": self.adapter.model_dump(mode="json") if self.adapter else None}
        best = {"best_metric": self.best_metric, "best_step": self.best_step}
        self.store.storage.write_json(f"{key}/state.json", {**state, **best, "zero_signal": self.zero_signal})
        self.store.mark_latest(step)
        self._retire()

    def _retire(self) -> None:
        """Retention (checkpoint.keep_last): adapters no kept checkpoint serves are unloaded from the policy server,
        then they and the checkpoints let go are deleted, each first renamed out of sight so a crash never leaves
        half of one under its name."""
        checkpoints, adapters = self.store.retired(self.cfg.checkpoint.keep_last, self.best_step)
        for adapter in adapters:
            ray.get(self.mesh.policy.unload_adapter.remote(adapter.rsplit("/", 1)[-1]))
        for key in [*adapters, *checkpoints]:
            self.store.storage.delete(key)

    def _show(self, step: int, m: dict[str, Any]) -> None:
        console.print(
            f"step {step}/{self.cfg.max_steps}: reward {m['train.reward']:.3f}, "
            f"task_complete {m.get('train.task_complete', 0):.0%}, turns {m.get('train.mean_turns', 0):.2f}, "
            f"KL {m.get('learner.kl', 0.0):.4f}, failed {m['train.failed']:.0f} | "
            + ", ".join(f"{k[5:]} {v:.1f}s" for k, v in m.items() if k.startswith("wall.")),
            soft_wrap=True,
        )


def episode_metrics(
    episodes: list[Episode], prefix: str, floors: dict[str, dict[str, int]] | None = None
) -> dict[str, float | None]:
    """trial_metrics of the graded episodes (net of `floors` when given), plus how many faulted (an infrastructure
    failure is not a score)."""
    graded = [e for e in episodes if e.grade is not None]
    if not graded:
        return {f"{prefix}.failed": float(len(episodes))}
    rewards = [e.reward for e in graded if e.reward is not None]
    return {
        **trial_metrics(graded, prefix=prefix, floors=floors),
        f"{prefix}.reward": _mean(rewards) if rewards else None,
        f"{prefix}.failed": float(len(episodes) - len(graded)),
    }


def stale_turn_share(episodes: list[Episode], step: int) -> float:
    """The share of step `step`'s turns sampled by an adapter older than the previous step's (pipelining's lag)."""
    versions = [turn.policy_version for episode in episodes for turn in episode.turns]
    return sum(v < step - 1 for v in versions) / len(versions) if versions else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="a RunConfig YAML (deploy/configs/)")
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE", help="override a config value"
    )
    parser.add_argument("--resume", action="store_true", help="continue after the run's last checkpoint")
    parser.add_argument(
        "--verbose", action="store_true", help="Ray's, vLLM's and the actors' logs here, not in runs/<run>/logs/"
    )
    args = parser.parse_args(argv)
    widen_when_piped()
    try:
        cfg = anchor_paths(load_config(args.config, args.overrides))  # relative paths: under the project home
        check_trackers(cfg.logging.trackers)  # before Ray and the mesh start, not at the first step
    except (ConfigError, TrackerUnavailableError) as exc:
        print(exc, file=sys.stderr)
        return 2
    log_dir = None if args.verbose else quiet_driver(cfg.run_dir / "logs")
    cluster = connect(cfg.resources.ray_address, log_dir=log_dir)
    if log_dir is not None:
        console_says_where(log_dir, cluster.dashboard_url)
    tasks, split = load_corpus(cfg.paths.corpus_dir)
    mesh = start_mesh(cfg)
    run = TrainingRun(cfg, mesh, {t.task_id: t for t in tasks}, split.train, split.validation)
    signal.signal(signal.SIGTERM, lambda *_: setattr(run, "stop_requested", True))
    try:
        first_step = run.start(args.resume)
    except SystemExit as exc:  # a refusal (the run exists, no checkpoint loads): quiet, stderr is the log
        if log_dir is not None:
            console.print(str(exc.code), markup=False, highlight=False, soft_wrap=True)
        raise
    outcome = run.run(first_step)
    console.print(f"[bold green]{cfg.run_name}: {outcome}[/bold green]")
    card = cfg.run_dir / "card.md"
    atomic_write_bytes(card, run.lineage.card(cfg.run_name).encode())
    console.print(f"lineage card: {card}", markup=False, highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
