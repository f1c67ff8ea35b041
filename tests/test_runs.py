"""The run directory: atomic writes, a clean stop on a full disk, and step sampling that a resume reproduces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fieldkit.gym.records import Action, Episode, Turn
from fieldkit.runs import (
    DiskFullError,
    RunDir,
    RunStore,
    atomic_write_json,
    atomic_write_jsonl,
    read_episodes,
    sample_tasks,
)
from fieldkit.storage import Storage


def episode(i: int) -> Episode:
    turn = Turn(index=0, prompt_token_ids=[1, 2], response_token_ids=[3], response_logprobs=[-0.5],
                response_text="x", action=Action(kind="done"))  # fmt: skip
    return Episode(episode_id=f"e{i}", task_id="t", group_id="g", policy_version=0, turns=[turn],
                   stop_reason="task_complete", reward=0.5)  # fmt: skip


def test_episodes_round_trip_and_leave_no_temp_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    path = run.step_episodes(3)
    atomic_write_jsonl(path, [episode(0), episode(1)])
    assert [e.episode_id for e in read_episodes(path)] == ["e0", "e1"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["episodes.jsonl"]


def test_full_disk_stops_before_writing_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"step": 1})
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))  # a fault we cannot cause
    with pytest.raises(DiskFullError, match="MiB free"):
        atomic_write_json(path, {"step": 2})
    assert path.read_text() == '{\n  "step": 1\n}\n'


def test_latest_checkpoint_requires_a_complete_state(tmp_path: Path) -> None:
    run = RunStore(Storage(str(tmp_path)), "run")
    assert run.latest_checkpoint() is None
    run.mark_latest(2)
    with pytest.raises(FileNotFoundError, match=r"state\.json is missing"):
        run.latest_checkpoint()
    atomic_write_json(tmp_path / run.checkpoint(2) / "state.json", {"step": 2})
    assert run.latest_checkpoint() == (2, "run/checkpoints/000002")


def test_step_sampling_is_a_function_of_seed_and_step() -> None:
    ids = [f"t{i}" for i in range(42)]
    assert sample_tasks(ids, 0, 5, 4) == sample_tasks(list(reversed(ids)), 0, 5, 4)
    assert sample_tasks(ids, 0, 5, 4) != sample_tasks(ids, 0, 6, 4)
    assert len(set(sample_tasks(ids, 1, 0, 42))) == 42
    assert len(sample_tasks(ids[:2], 0, 0, 5)) == 5
    with pytest.raises(ValueError, match="empty"):
        sample_tasks([], 0, 0, 1)


def test_retention_keeps_the_newest_checkpoints_the_best_and_the_adapters_they_serve(tmp_path: Path) -> None:
    run = RunStore(Storage(str(tmp_path)), "run")
    served = {0: 0, 1: 1, 2: 1, 3: 3, 4: 4}  # step 2 trained nothing: its checkpoint still serves v1
    for version in (0, 1, 3, 4, 5):  # v5: published, its checkpoint not written yet
        (tmp_path / run.adapter(f"run-v{version}")).mkdir(parents=True)
    (tmp_path / "run" / "adapters" / ".run-v6.tmp123").mkdir()  # a publish in progress
    for step, version in served.items():
        adapter = {"name": f"run-v{version}", "path": str(tmp_path / run.adapter(f"run-v{version}"))}
        atomic_write_json(tmp_path / run.checkpoint(step) / "state.json", {"step": step, "adapter": adapter})
    checkpoints, adapters = run.retired(keep_last=2, keep_step=1)
    assert checkpoints == [run.checkpoint(2), run.checkpoint(0)]  # 4 and 3 are the newest, 1 is the best
    assert adapters == [run.adapter("run-v0")]  # v1 serves the best; v5 is newer than every checkpoint
    assert run.retired(keep_last=5, keep_step=None) == ([], [])
