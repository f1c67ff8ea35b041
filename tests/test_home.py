"""Paths that survive a job: a run's relative paths resolve under one project home, never under Ray's temporary
copy of the working directory; the job's entrypoint is this interpreter with the config and its overrides."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from fieldkit.config import ConfigError, RunConfig
from fieldkit.home import HOME_ENV, anchor_paths, project_home
from services.jobs import driver_entrypoint

RAY_COPY = Path("/tmp/ray/session_x/runtime_resources/working_dir_files/_ray_pkg_abc")


def test_relative_paths_resolve_under_fieldkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    cfg = RunConfig.model_validate({"paths": {"models_dir": "/models"}, "model": {"init_adapter": "adapters/a"}})
    anchored = anchor_paths(cfg, cwd=RAY_COPY)  # FIELDKIT_HOME wins, even inside Ray's copy
    assert anchored.paths.runs_dir == tmp_path / "runs" and anchored.run_dir == tmp_path / "runs" / "demo"
    assert anchored.paths.corpus_dir == tmp_path / "runs" / "corpus"
    assert anchored.paths.lineage_db == tmp_path / "runs" / "lineage.db"
    assert anchored.paths.models_dir == Path("/models")  # absolute stays
    assert anchored.model.init_adapter == tmp_path / "adapters" / "a"
    assert cfg.paths.runs_dir == Path("runs")  # the config given is not changed


def test_without_fieldkit_home_the_home_is_the_current_directory_except_in_rays_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert project_home(tmp_path) == tmp_path.resolve()
    assert anchor_paths(RunConfig(), cwd=tmp_path).paths.runs_dir == tmp_path.resolve() / "runs"
    assert project_home(RAY_COPY) is None
    with pytest.raises(ConfigError) as info:
        anchor_paths(RunConfig(), cwd=RAY_COPY)
    assert len(info.value.problems) == 4  # runs_dir, models_dir, corpus_dir, lineage_db
    assert info.value.problems[0].startswith("paths.runs_dir = 'runs' is relative, and this driver runs in Ray's")
    assert f"set {HOME_ENV}" in info.value.problems[0] and "fieldkit train --address" in info.value.problems[0]
    absolute = {k: str(tmp_path / k) for k in ("runs_dir", "models_dir", "corpus_dir", "lineage_db")}
    cfg = RunConfig.model_validate({"paths": absolute})
    assert anchor_paths(cfg, cwd=RAY_COPY) == cfg  # absolute paths need no home


def test_the_jobs_entrypoint_is_this_interpreter_with_the_config_and_overrides(tmp_path: Path) -> None:
    inside = tmp_path / "deploy" / "c.yaml"
    line = driver_entrypoint(inside, ["rollout.group_size=8", "logging.trackers=[tensorboard, mlflow]"], True, tmp_path)
    assert shlex.split(line) == [
        sys.executable, "-u", "-m", "services.train", "--config", "deploy/c.yaml",  # travels with the working directory
        "--set", "rollout.group_size=8", "--set", "logging.trackers=[tensorboard, mlflow]", "--resume",
    ]  # fmt: skip
    outside = Path("/elsewhere/c.yaml")
    assert shlex.split(driver_entrypoint(outside, [], False, tmp_path))[5] == "/elsewhere/c.yaml"
