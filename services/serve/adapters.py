"""Adapters for the endpoint: the AdapterRef of an adapter in a directory or in run storage, and the record of what
was published into a running application.

A trained adapter (runs/<run>/best, or s3://bucket/prefix/<run>/best in run storage) holds the PEFT files and,
written beside them by whoever published it, `adapter_ref.json`: its AdapterRef with the learner's probe. One
without it gets a probe computed here with transformers from the same files, so the engine's copy is still checked
against them. Whoever builds a ref reads the files from this node (a URI through this node's cache); the ref names
the location itself, so each replica's policy server fetches it into the cache of its own node.

Publishing into a running application reaches every live replica; the record of published refs lets a replica that
starts later (autoscaling, a restart after a crash) serve the same versions instead of the ones it was built with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

from fieldkit.runs import RunStore, atomic_write_json
from fieldkit.storage import MANIFEST, Storage, StorageError, fetch_dir, is_uri
from fieldkit.training.records import AdapterRef

REF_FILE = "adapter_ref.json"
CONFIG_FILE = "adapter_config.json"
_VERSION = re.compile(r"-v(\d+)$")


class AdapterDirError(ValueError):
    """The directory is not a PEFT LoRA adapter; the message names the path and what is missing."""


def location_of(source: str | Path) -> str:
    """What a ref's path holds for an adapter given as `source`: a URI as it is, a directory made absolute."""
    return str(source) if is_uri(str(source)) else str(Path(source).resolve())


def default_name(location: str | Path) -> str:
    """<run>/best (a directory or a URI) serves as "<run>"; anything else under its own name (made a valid model
    id)."""
    location = location_of(location)
    path = PurePosixPath(urlsplit(location).path if is_uri(location) else location)
    raw = path.parent.name if path.name == "best" else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")
    return name or "adapter"


def adapter_ref_from_dir(path: Path, name: str | None = None, location: str | None = None) -> AdapterRef:
    """The ref to serve the adapter files in `path` under `name` (default: from its ref file, else `default_name`);
    `location` is where replicas read it (the URI `path` was fetched from; default `path` itself)."""
    location = location or location_of(path)
    ref_file = path / REF_FILE
    if ref_file.exists():
        try:
            ref = AdapterRef.model_validate_json(ref_file.read_text())
        except ValueError as exc:
            raise AdapterDirError(f"{ref_file}: not an AdapterRef: {exc}") from None
        return ref.model_copy(update={"path": location, "name": name or ref.name})
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        rank = int(config["r"])
    except FileNotFoundError:
        raise AdapterDirError(f"{path}: no {CONFIG_FILE}; not a PEFT adapter directory") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterDirError(f"{path / CONFIG_FILE}: no integer rank 'r' ({exc})") from None
    return AdapterRef(name=name or default_name(location), version=0, path=location, rank=rank)


def adapter_ref_at(source: str | Path, name: str | None = None, cache: Path | None = None) -> AdapterRef:
    """The ref of the adapter at `source`, a directory or a run-storage URI (read through this node's `cache`)."""
    location = location_of(source)
    try:
        local = fetch_dir(location, cache)
    except StorageError as exc:
        raise AdapterDirError(str(exc)) from None
    return adapter_ref_from_dir(local, name, location)


def with_probe(ref: AdapterRef, model_dir: str, cache: Path | None = None) -> AdapterRef:
    """`ref` with a probe: its own, else one scored now (float32, transformers) from the files at `ref.path` (a
    model or an adapter in storage is fetched into this node's `cache` first)."""
    if ref.probe is not None:
        return ref
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fieldkit.training.probe import build_probe, probe_sequence

    model_dir = str(fetch_dir(model_dir, cache))
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(fetch_dir(ref.path, cache))).eval()
    with torch.no_grad():
        probe = build_probe(model, *probe_sequence(AutoTokenizer.from_pretrained(model_dir)))
    return ref.model_copy(update={"probe": probe})


class RunAdapterError(LookupError):
    """A publish request named no adapter of run storage; the message names the run and version sent, no path."""


def run_adapter_ref(storage: Storage, run: str, version: int | Literal["best"], name: str | None) -> AdapterRef:
    """The ref of adapter `version` (or the chosen `best`) of `run`, from run storage only, served as `name`
    (default: the run's name). The version's ref comes from its ref file, else the checkpoint that recorded it;
    without either it has no probe (the caller scores one)."""
    if run in ("", ".", "..") or "/" in run or not storage.exists(run):  # one name in storage, never a path
        raise RunAdapterError(f"no run {run!r} in run storage")
    store = RunStore(storage, run)
    key = _adapter_key(store, version)
    # a version in an object store exists once its manifest does (written last); a directory once it holds the PEFT
    # files (one copied in by hand has no manifest)
    marker = MANIFEST if storage.remote else CONFIG_FILE
    if not storage.exists(f"{key}/{marker}") or not _in_place(storage, key):
        found = (_VERSION.search(n) for n in storage.children(f"{run}/adapters", marker=marker))
        have = ", ".join(str(v) for v in sorted(int(m.group(1)) for m in found if m)) or "none"
        best = "best" if storage.exists(f"{store.best}/{marker}") else "no best"
        raise RunAdapterError(
            f"{run_adapter_label(run, version)}: no such adapter (the run has versions: {have}; {best})"
        )
    location = storage.uri(key)
    local = storage.fetch(key)
    if version == "best" or (local / REF_FILE).exists():
        ref = adapter_ref_from_dir(local, location=location)
    else:
        ref = _checkpointed_ref(store, key) or adapter_ref_from_dir(local, location=location)
        ref = ref.model_copy(update={"version": version})
    return ref.model_copy(update={"name": name or default_name(storage.uri(run)), "path": location})


def _adapter_key(store: RunStore, version: int | Literal["best"]) -> str:
    """Where run storage keeps adapter `version` (or `best`) of the run (services.train, services.learner)."""
    return store.best if version == "best" else store.adapter(f"{store.run}-v{version}")


def _in_place(storage: Storage, key: str) -> bool:
    """`key` is stored where its name says: a directory linked out of run storage (or to another run) is not."""
    try:
        return storage.key_of(storage.uri(key)) == key
    except StorageError:
        return False


def run_adapter_label(run: str, version: int | Literal["best"]) -> str:
    """How a caller names that adapter: what messages say instead of its path."""
    return f"run {run!r} {'best' if version == 'best' else f'version {version}'}"


def run_storage_labels(storage: Storage, run: str, version: int | Literal["best"]) -> dict[str, str]:
    """What messages about that adapter say instead of run storage's names for it, for `scrub_paths`: its location
    (as configured and as resolved), storage's root (and an object store's bucket/prefix), this node's cache."""
    key = _adapter_key(RunStore(storage, run), version)
    label = run_adapter_label(run, version)
    return {
        storage.uri(key): label,
        f"{storage.root.rstrip('/')}/{key}": label,
        storage.uri(""): "run storage",
        storage.root: "run storage",
        storage.base: "run storage",
        str(storage.cache): "the node cache",
    }


def _checkpointed_ref(store: RunStore, key: str) -> AdapterRef | None:
    """The ref (with the learner's probe) that a checkpoint recorded for the adapter stored at `key`."""
    name = PurePosixPath(key).name
    for _, checkpoint in store.checkpoints():
        adapter = store.storage.read_json(f"{checkpoint}/state.json").get("adapter")
        if adapter is not None and PurePosixPath(urlsplit(adapter["path"]).path).name == name:
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
