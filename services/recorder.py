"""Where a training run's results go: a lineage trial first (the record the card, the demo's report and a resume
read), then the experiment trackers (fieldkit.trackers: TensorBoard, MLflow, W&B), which mirror it.

A trial already in the store was recorded, and mirrored, before a crash: a resumed run replaying that step writes
neither again, so a tracker's curve has each step once.
"""

from __future__ import annotations

from typing import Any

from fieldkit.config import RunConfig
from fieldkit.lineage import LineageStore, Trial
from fieldkit.lineage.provenance import Provenance
from fieldkit.trackers import open_trackers
from fieldkit.training.records import AdapterRef


class Recorder:
    def __init__(self, cfg: RunConfig, provenance: Provenance) -> None:
        self.cfg = cfg
        self.provenance = provenance
        self.lineage = LineageStore(cfg.paths.lineage_db)
        self.trackers = open_trackers(cfg)

    def record(
        self, name: str, parent: str | None, kind: str, status: str, step: int, metric: tuple[str, str],
        metrics: dict[str, Any], walls: dict[str, float], adapter: AdapterRef | None, best: bool = False,
    ) -> None:  # fmt: skip
        """One lineage trial `<run>/<name>` (`metric` is (name, direction)), then the trackers: a step's metrics,
        or a gate's with whether it is the best so far."""
        run = self.cfg.run_name
        trial_id = f"{run}/{name}"
        if self.lineage.has(trial_id):  # recorded before a crash; the resumed run replays the same step
            return
        baseline = f"{run}/gate-0000"
        self.lineage.record_trial(
            Trial(
                trial_id=trial_id,
                run_id=run,
                parent_id=f"{run}/{parent}" if parent else None,
                baseline_id=baseline if kind in {"rl-step", "validation-gate"} and trial_id != baseline else None,
                kind=kind,  # type: ignore[arg-type]
                status=status,  # type: ignore[arg-type]
                step=step,
                hypothesis=f"{self.cfg.algorithm.name} on {self.cfg.model.name_or_path}, seed {self.cfg.seed}",
                metric_name=metric[0],
                metric=metrics.get(metric[0]),
                direction=metric[1],  # type: ignore[arg-type]
                metrics={k: v for k, v in metrics.items() if isinstance(v, float | int)},
                config=self.cfg.model_dump(mode="json"),
                code_version=self.provenance.code_version,
                seeds={"run": self.cfg.seed},
                packages=self.provenance.packages,
                wall=walls,
                artifacts={"adapter": adapter.path} if adapter else {},
            )
        )
        if kind == "validation-gate":
            self.trackers.log_gate(step, metrics, best)
        else:
            self.trackers.log_metrics(step, metrics)

    def close(self, status: str = "finished") -> None:
        """Mark the trackers' runs ended (`finished`, or `failed` when the run stopped on an error)."""
        self.trackers.close(status)
