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

from fieldkit.runs import atomic_write_json
from fieldkit.training.records import AdapterRef

REF_FILE = "adapter_ref.json"
CONFIG_FILE = "adapter_config.json"


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
