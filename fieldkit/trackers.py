"""Experiment trackers: each step's metrics and each validation gate, mirrored where people already look.

`logging.trackers` picks them: TensorBoard (event files under runs/<run>/tensorboard/, the default), MLflow (a
SQLite store under the runs directory unless a tracking URI is given) and W&B (offline unless a key is set). The
lineage store and runs/<run>/steps/*/metrics.json stay the record a run resumes and reports from; a tracker is a
view, so one that fails mid-run is reported and dropped rather than stopping the training it mirrors.

Each backend imports its package when it is opened, never at module load (fieldkit imports no heavy package at
import time), and a missing package is named with the pip extra that installs it before the run starts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fieldkit.config import RunConfig

log = logging.getLogger(__name__)

# tracker -> (the module it imports, how to install it)
PACKAGES = {
    "tensorboard": ("tensorboard", "pip install tensorboard (a main dependency: `make setup` installs it)"),
    "mlflow": ("mlflow", "pip install -e '.[mlflow]'"),
    "wandb": ("wandb", "pip install -e '.[wandb]'"),
}


class TrackerUnavailableError(RuntimeError):
    """A configured tracker whose package is not installed."""


class Tracker(Protocol):
    """What the driver calls; metric names are the dotted ones of metrics.json (`train.reward`, `learner.kl`)."""

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None: ...

    def log_gate(self, step: int, metrics: Mapping[str, Any], best: bool) -> None: ...

    def close(self, status: str = "finished") -> None: ...


def numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics dict: a gate whose episodes all faulted reports None, which no tracker plots."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """Dotted field -> value, for the trackers' hyper-parameter tables."""

    def walk(data: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Any]]:
        for key, value in data.items():
            if isinstance(value, Mapping):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(cfg.model_dump(mode="json"), ""))


class TensorBoardTracker:
    """Scalars in TensorBoard event files, tag `train/reward` for `train.reward` (TensorBoard groups by the part
    before the first slash). Written with tensorboard's own event writer, the one torch.utils.tensorboard uses,
    so the driver never imports torch."""

    def __init__(self, log_dir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer = EventFileWriter(str(log_dir))

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=name.replace(".", "/", 1), simple_value=v) for name, v in numbers(metrics).items()]
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        self._writer.flush()  # a step takes seconds to minutes: nobody should wait for a buffer to see it

    def log_gate(self, step: int, metrics: Mapping[str, Any], best: bool) -> None:
        self.log_metrics(step, {**metrics, "validation.is_best": float(best)})

    def close(self, status: str = "finished") -> None:
        self._writer.close()


class MlflowTracker:
    """One MLflow run per training run, found again by its `fieldkit.run` tag when the run resumes."""

    def __init__(self, cfg: RunConfig) -> None:
        from mlflow.tracking import MlflowClient

        uri = cfg.logging.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            cfg.paths.runs_dir.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{cfg.paths.runs_dir.resolve() / 'mlflow.db'}"
        self.tracking_uri = uri
        self._client = MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(cfg.logging.mlflow_experiment)
        self.experiment_id = (
            experiment.experiment_id if experiment else self._client.create_experiment(cfg.logging.mlflow_experiment)
        )
        found = self._client.search_runs(
            [self.experiment_id], filter_string=f"tags.`fieldkit.run` = '{cfg.run_name}'", max_results=1
        )
        if found:  # a resumed run continues its MLflow run
            self.run_id = found[0].info.run_id
            self._client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {"fieldkit.run": cfg.run_name}
            run = self._client.create_run(self.experiment_id, run_name=cfg.run_name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(flat_config(cfg))

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(name, str(value)[:6000]) for name, value in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow allows letters, digits, _ - . / and spaces in a name; ours are ASCII dotted names already
        items = [Metric(re.sub(r"[^\w.\-/ ]", "_", k), v, now, step) for k, v in numbers(metrics).items()]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_gate(self, step: int, metrics: Mapping[str, Any], best: bool) -> None:
        self.log_metrics(step, {**metrics, "validation.is_best": float(best)})

    def close(self, status: str = "finished") -> None:
        self._client.set_terminated(self.run_id, status="FINISHED" if status == "finished" else "FAILED")


class WandbTracker:
    """A W&B run in `runs/<run>/wandb/`, offline unless a key (or WANDB_MODE) says otherwise; its id is derived
    from the run name, so a resumed run continues the same W&B run."""

    def __init__(self, cfg: RunConfig) -> None:
        import wandb

        mode: str = cfg.logging.wandb_mode
        if mode == "auto":
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        directory = cfg.run_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self._run = wandb.init(
            project=cfg.logging.wandb_project,
            name=cfg.run_name,
            id=wandb_run_id(cfg.run_name),
            resume="allow",
            dir=str(directory),
            mode=mode,  # type: ignore[arg-type]
            config=flat_config(cfg),
            settings=wandb.Settings(quiet=True),
            reinit="create_new",  # a process may train several runs (the demo's seeds); each is its own W&B run
        )
        self.run_dir = Path(self._run.dir).parent  # .../wandb/<offline-run-...>/files -> the run's own directory

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._run.log(numbers(metrics), step=step)

    def log_gate(self, step: int, metrics: Mapping[str, Any], best: bool) -> None:
        self.log_metrics(step, {**metrics, "validation.is_best": float(best)})

    def close(self, status: str = "finished") -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)


def wandb_run_id(run_name: str) -> str:
    """A W&B run id (lowercase letters, digits, dashes; at most 64) that is the same for every start of a run."""
    slug = re.sub(r"[^a-z0-9-]", "-", run_name.lower())[:48]
    return f"{slug}-{hashlib.sha256(run_name.encode()).hexdigest()[:8]}"


class Trackers:
    """The configured trackers as one: each call goes to every tracker; one that raises is reported and dropped
    (the lineage store has the numbers; a tracker's outage must not end a run)."""

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = trackers

    def _each(self, what: str, call: Any) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                call(tracker)
            except Exception as exc:
                log.warning("tracker %s failed to %s and is dropped for the rest of the run: %s", name, what, exc)
                del self.trackers[name]

    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._each("log metrics", lambda t: t.log_metrics(step, metrics))

    def log_gate(self, step: int, metrics: Mapping[str, Any], best: bool) -> None:
        self._each("log a gate", lambda t: t.log_gate(step, metrics, best))

    def close(self, status: str = "finished") -> None:
        self._each("close", lambda t: t.close(status))
        self.trackers = {}


def check_trackers(names: Iterable[str]) -> None:
    """Refuse, before anything starts, a tracker whose package is missing; the error says how to install it."""
    missing = [name for name in names if importlib.util.find_spec(PACKAGES[name][0]) is None]
    if missing:
        how = "; ".join(f"{name}: {PACKAGES[name][1]}" for name in missing)
        raise TrackerUnavailableError(f"logging.trackers names {', '.join(missing)}, not installed here ({how})")


def open_trackers(cfg: RunConfig) -> Trackers:
    """The trackers of `logging.trackers`, opened for this run."""
    check_trackers(cfg.logging.trackers)
    opened: dict[str, Tracker] = {}
    for name in cfg.logging.trackers:
        if name == "tensorboard":
            opened[name] = TensorBoardTracker(cfg.run_dir / "tensorboard")
        elif name == "mlflow":
            opened[name] = MlflowTracker(cfg)
        else:
            opened[name] = WandbTracker(cfg)
    return Trackers(opened)
