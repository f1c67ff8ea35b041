"""The project home: the one absolute directory a run's relative paths resolve against (runs/, the corpus, the
model cache, the lineage store, an initial adapter), so that what a run writes survives a Ray job.

`ray job submit --working-dir .` runs the driver in Ray's unpacked copy of the working directory, which Ray deletes
with the job: a relative `runs/` there puts a run's outputs in a temporary directory, misses the corpus, and
rebuilds the model cache. The home is $FIELDKIT_HOME when set (`fieldkit train --address` sets it for the job to
the directory it was started in), else the current directory, except inside Ray's copy, where a relative path is
refused with what to do instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from fieldkit.config import ConfigError, RunConfig
from fieldkit.storage import is_uri

HOME_ENV = "FIELDKIT_HOME"
RAY_COPY_MARK = "working_dir_files"  # Ray unpacks a job's working_dir under <session>/runtime_resources/<this>/


def project_home(cwd: Path | None = None) -> Path | None:
    """$FIELDKIT_HOME, or the current directory; None inside Ray's copy of a job's working directory."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    cwd = (cwd or Path.cwd()).resolve()
    return None if RAY_COPY_MARK in cwd.parts else cwd


def anchor_paths(cfg: RunConfig, home: Path | None = None, cwd: Path | None = None) -> RunConfig:
    """`cfg` with every relative path made absolute under the project home (`project_home()` unless given)."""
    home = home if home is not None else project_home(cwd)
    paths = cfg.paths.model_dump()
    # None (the default) and object-store URIs (paths.storage: s3://...) are not paths to anchor
    paths = {k: v for k, v in paths.items() if v is not None and not is_uri(str(v))}
    relative = {f"paths.{k}": v for k, v in paths.items() if not Path(v).is_absolute()}
    adapter = cfg.model.init_adapter
    if adapter is not None and not adapter.is_absolute():
        relative["model.init_adapter"] = adapter
    if not relative:
        return cfg
    if home is None:
        raise ConfigError(
            "paths",
            [
                f"{key} = {str(value)!r} is relative, and this driver runs in Ray's temporary copy of the working "
                f"directory ({Path.cwd()}), which is deleted with the job: set {HOME_ENV} to the project directory "
                f"(in the job's runtime_env env_vars, or in the environment `ray start` ran in), give absolute "
                "paths, or submit with `fieldkit train --address`, which does the former"
                for key, value in relative.items()
            ],
        )
    anchored = {
        k: v if Path(v).is_absolute() else str(home / v) if k == "storage" else home / v for k, v in paths.items()
    }
    model = cfg.model
    if "model.init_adapter" in relative:
        model = model.model_copy(update={"init_adapter": home / relative["model.init_adapter"]})
    return cfg.model_copy(update={"paths": cfg.paths.model_copy(update=anchored), "model": model})
