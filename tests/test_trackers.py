"""Experiment trackers: what the driver records (services.recorder: a lineage trial, then the trackers) lands in
TensorBoard event files, an MLflow store and an offline W&B run, each read back with its own reader; a resumed run
adds each step once; a tracker whose package is missing is refused with the pip extra to install.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fieldkit.config import RunConfig
from fieldkit.lineage.provenance import capture_provenance
from fieldkit.trackers import PACKAGES, TrackerUnavailableError, check_trackers
from services.recorder import Recorder


def config(tmp_path: Path, trackers: list[str]) -> RunConfig:
    runs = tmp_path / "runs"
    return RunConfig.model_validate(
        {
            "run_name": "tracked",
            "paths": {"runs_dir": str(runs), "lineage_db": str(runs / "lineage.db")},
            "logging": {"trackers": trackers},
        }
    )


def step_metrics(step: int) -> dict:
    """What TrainingRun.step writes: episodes' summary, learner statistics, walls; a None where nothing was measured."""
    return {"train.reward": 0.1 * step, "train.task_complete": 0.25, "learner.kl": 0.01 * step,
            "learner.clip_fraction": 0.0, "wall.step_s": 3.5, "policy.served_version": float(step),
            "train.per_assertion_net": None}  # fmt: skip


def drive(cfg: RunConfig, steps: range, gates: tuple[int, ...]) -> Recorder:
    """The driver's calls, in its order: a gate at 0, then per step its trial and, at gate steps, a gate."""
    recorder = Recorder(cfg, capture_provenance(config=cfg))
    for step in steps:
        if step:
            parent = f"step-{step - 1:04d}" if step > 1 else "gate-0000"
            metrics = step_metrics(step)
            recorder.record(f"step-{step:04d}", parent, "rl-step", "keep", step, ("train.reward", "max"), metrics, {},
                            None)  # fmt: skip
        if step in gates:
            gate = {"validation.reward": 0.5 + step, "validation.task_pass": 0.0}
            recorder.record(f"gate-{step:04d}", None, "validation-gate", "keep", step, ("validation.reward", "max"),
                            gate, {}, None, best=step == 2)  # fmt: skip
    return recorder


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """Steps 1-2 with gates at 0 and 2, a failure (TrainingRun.run closes the trackers as failed), then a resume
    that replays step 2 and its gate and adds step 3."""
    cfg = config(tmp_path_factory.mktemp("trackers"), ["tensorboard", "mlflow", "wandb"])
    with pytest.MonkeyPatch.context() as env:  # the defaults: a SQLite MLflow store under runs/, W&B offline
        for name in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY"):
            env.delenv(name, raising=False)
        drive(cfg, range(0, 3), gates=(0, 2)).close("failed")
        drive(cfg, range(2, 4), gates=(2, 3)).close()
    return cfg


def test_tensorboard_event_files_hold_every_step_and_gate_once(tracked: RunConfig) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/reward", "learner/kl", "learner/clip_fraction", "wall/step_s", "validation/reward"} <= set(scalars)
    assert "train/per_assertion_net" not in scalars  # None is not plotted as 0
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/reward")] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert [(e.step, e.value) for e in events.Scalars("validation/reward")] == [(0, 0.5), (2, 2.5), (3, 3.5)]
    assert [(e.step, e.value) for e in events.Scalars("validation/is_best")] == [(0, 0.0), (2, 1.0), (3, 0.0)]


def test_mlflow_run_holds_the_step_metrics_and_is_continued_on_resume(tracked: RunConfig) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked.paths.runs_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fieldkit")
    (run,) = client.search_runs([experiment.experiment_id])  # the resume continued the same MLflow run
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["rollout.group_size"] == "4" and run.data.params["logging.trackers"] == str(
        ["tensorboard", "mlflow", "wandb"]
    )
    history = client.get_metric_history(run.info.run_id, "train.reward")
    assert sorted((m.step, round(m.value, 4)) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    kl = client.get_metric_history(run.info.run_id, "learner.kl")
    assert sorted(m.step for m in kl) == [1, 2, 3]
    gates = client.get_metric_history(run.info.run_id, "validation.reward")
    assert sorted((m.step, m.value) for m in gates) == [(0, 0.5), (2, 2.5), (3, 3.5)]


def wandb_records(path: Path) -> list:
    """The protobuf Records of an offline W&B run file. W&B's Python reader is gone (its Go core reads them), so the
    framing is read here: a 7-byte header (':W&B', magic, version), then LevelDB log blocks of 32 KiB whose records
    (crc 4, length 2, type 1: full 1 / first 2 / middle 3 / last 4) carry one serialized Record each."""
    from wandb.proto import wandb_internal_pb2

    data, records, pos, pending = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding
            pos += room
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_step_metrics(tracked: RunConfig) -> None:
    files = sorted((tracked.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # the first start and the resume, both offline (no key here): `wandb sync` uploads them
    rows = []
    for path in files:
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in items})
    rewards = sorted((row["_step"], round(row["train.reward"], 4)) for row in rows if "train.reward" in row)
    assert rewards == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert sorted(row["_step"] for row in rows if "validation.reward" in row) == [0, 2, 3]


def test_a_missing_tracker_package_is_named_with_its_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    check_trackers(["tensorboard", "mlflow", "wandb"])  # all installed by `make setup`
    monkeypatch.setitem(PACKAGES, "wandb", ("fieldkit_no_such_package", "pip install -e '.[wandb]'"))
    with pytest.raises(TrackerUnavailableError) as info:
        check_trackers(["tensorboard", "wandb"])
    assert str(info.value) == ("logging.trackers names wandb, not installed here (wandb: pip install -e '.[wandb]')")


def test_tensorboard_alone_is_the_default(tmp_path: Path) -> None:
    cfg = RunConfig.model_validate({"paths": {"runs_dir": str(tmp_path), "lineage_db": str(tmp_path / "l.db")}})
    assert cfg.logging.trackers == ["tensorboard"]
    recorder = Recorder(cfg, capture_provenance(config=cfg))
    recorder.record("gate-0000", None, "validation-gate", "baseline", 0, ("validation.reward", "max"),
                    {"validation.reward": 0.5}, {}, None, best=True)  # fmt: skip
    recorder.close()
    assert list((cfg.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "mlflow.db").exists() and not (cfg.run_dir / "wandb").exists()
