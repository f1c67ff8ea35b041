"""Adapters for the endpoint: the AdapterRef of a directory on disk, and the record of what was published into a
running application.

A trained adapter directory (e.g. runs/<run>/best) holds the PEFT files and, written beside them by whoever
published it, `adapter_ref.json`: its AdapterRef with the learner's probe. A directory without one gets a probe
computed here with transformers from the same files, so the engine's copy is still checked against them.

Publishing into a running application reaches every live replica; the record of published refs lets a replica that
starts later (autoscaling, a restart after a crash) serve the same versions instead of the ones it was built with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from fieldkit.runs import RunDir, atomic_write_json
from fieldkit.training.records import AdapterRef

REF_FILE = "adapter_ref.json"
CONFIG_FILE = "adapter_config.json"
_VERSION = re.compile(r"-v(\d+)$")


class AdapterDirError(ValueError):
    """The directory is not a PEFT LoRA adapter; the message names the path and what is missing."""


def default_name(path: Path) -> str:
    """runs/<run>/best serves as "<run>"; any other directory under its own name (made a valid model id)."""
    path = path.resolve()
    raw = path.parent.name if path.name == "best" else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")
    return name or "adapter"


def adapter_ref_from_dir(path: Path, name: str | None = None) -> AdapterRef:
    """The ref to serve the adapter in `path` under `name` (default: from its ref file, else `default_name`)."""
    ref_file = path / REF_FILE
    if ref_file.exists():
        try:
            ref = AdapterRef.model_validate_json(ref_file.read_text())
        except ValueError as exc:
            raise AdapterDirError(f"{ref_file}: not an AdapterRef: {exc}") from None
        return ref.model_copy(update={"path": str(path.resolve()), "name": name or ref.name})
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        rank = int(config["r"])
    except FileNotFoundError:
        raise AdapterDirError(f"{path}: no {CONFIG_FILE}; not a PEFT adapter directory") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterDirError(f"{path / CONFIG_FILE}: no integer rank 'r' ({exc})") from None
    return AdapterRef(name=name or default_name(path), version=0, path=str(path.resolve()), rank=rank)


def with_probe(ref: AdapterRef, model_dir: str) -> AdapterRef:
    """`ref` with a probe: its own, else one scored now (float32, transformers) from the files at `ref.path`."""
    if ref.probe is not None:
        return ref
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fieldkit.training.probe import build_probe, probe_sequence

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, ref.path).eval()
    with torch.no_grad():
        probe = build_probe(model, *probe_sequence(AutoTokenizer.from_pretrained(model_dir)))
    return ref.model_copy(update={"probe": probe})


class RunAdapterError(LookupError):
    """A publish request named no adapter of run storage; the message names the run and version sent, no path."""


def run_adapter_ref(runs_dir: Path, run: str, version: int | Literal["best"], name: str | None) -> AdapterRef:
    """The ref of adapter `version` (or the chosen `best`) of `run`, from run storage only, served as `name`
    (default: the run's name). The version's ref comes from its ref file, else the checkpoint that recorded it;
    without either it has no probe (the caller scores one)."""
    root = (runs_dir / run).resolve()
    if root.parent != runs_dir.resolve() or not root.is_dir():  # the run name is a single directory name
        raise RunAdapterError(f"no run {run!r} in run storage")
    label = run_adapter_label(run, version)
    run_dir = RunDir(root)
    path = run_adapter_dir(runs_dir, run, version)
    if not (path / CONFIG_FILE).is_file() or not path.resolve().is_relative_to(root):  # a link out is not storage
        found = (_VERSION.search(p.name) for p in run_dir.adapters.glob(f"{run}-v*"))
        have = ", ".join(str(v) for v in sorted(int(m.group(1)) for m in found if m)) or "none"
        best = "best" if (run_dir.best / CONFIG_FILE).is_file() else "no best"
        raise RunAdapterError(f"{label}: no such adapter (the run has versions: {have}; {best})")
    if (path / REF_FILE).exists() or version == "best":
        ref = adapter_ref_from_dir(path)
    else:
        ref = _checkpointed_ref(run_dir, path) or adapter_ref_from_dir(path)
        ref = ref.model_copy(update={"version": version})
    return ref.model_copy(update={"name": name or default_name(root), "path": str(path.resolve())})


def run_adapter_dir(runs_dir: Path, run: str, version: int | Literal["best"]) -> Path:
    """Where run storage keeps adapter `version` (or `best`) of `run` (services.train, fieldkit.runs)."""
    run_dir = RunDir(runs_dir / run)
    return run_dir.best if version == "best" else run_dir.adapters / f"{run}-v{version}"


def run_adapter_label(run: str, version: int | Literal["best"]) -> str:
    """How a caller names that adapter: what messages say instead of its path."""
    return f"run {run!r} {'best' if version == 'best' else f'version {version}'}"


def _checkpointed_ref(run_dir: RunDir, path: Path) -> AdapterRef | None:
    """The ref (with the learner's probe) that a checkpoint recorded for the adapter directory `path`."""
    for _, checkpoint in run_dir.checkpoints():
        adapter = json.loads((checkpoint / "state.json").read_text()).get("adapter")
        if adapter is not None and Path(adapter["path"]).name == path.name:
            return AdapterRef.model_validate(adapter)
    return None


def scrub_paths(message: str, paths: dict[str, str]) -> str:
    """`message` with each server path replaced by what the caller knows it as."""
    for path, label in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(path, label)
    return message


class PublishedAdapters:
    """The newest published ref per adapter name of one application, one JSON file each (atomic writes)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def record(self, ref: AdapterRef) -> None:
        atomic_write_json(self.root / f"{ref.name}.json", ref.model_dump(mode="json"))

    def refs(self) -> list[AdapterRef]:
        if not self.root.is_dir():
            return []
        return [AdapterRef.model_validate_json(p.read_text()) for p in sorted(self.root.glob("*.json"))]

    def clear(self) -> None:
        """A new deployment starts from the adapters it declares; earlier publications belong to the old one."""
        for path in self.root.glob("*.json"):
            path.unlink()
