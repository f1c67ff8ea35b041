"""Which adapter versions serve, and whether an adapter directory is fit to load at all.

Each version gets a new engine LoRA id. A request for an adapter name gets its newest verified version and holds it
until the reply is complete: a version pushed out by newer ones (beyond `keep_versions`), or a name removed whole
(the driver's retention), is unloaded only once its last in-flight request is done, so neither disturbs a generation
already running.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from fieldkit.generation import AdapterRejectedError, LoadedAdapter, UnknownAdapterError
from fieldkit.training.records import AdapterRef
from services.policy.engine import EngineLora

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def inspect_adapter_dir(ref: AdapterRef, max_lora_rank: int) -> None:
    """Raise AdapterRejectedError, naming the file and value, unless `ref.path` holds a loadable PEFT LoRA."""
    root = Path(ref.path)
    if not root.is_dir():
        raise AdapterRejectedError(f"adapter {ref.name} v{ref.version}: path {ref.path} is not a directory")
    try:
        config = json.loads((root / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise AdapterRejectedError(
            f"adapter {ref.name} v{ref.version}: cannot read {root / CONFIG_FILE}: {exc}"
        ) from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA" or not isinstance(config.get("r"), int):
        raise AdapterRejectedError(f"{root / CONFIG_FILE}: not a PEFT LoRA config (needs peft_type LORA and an int r)")
    if config["r"] > max_lora_rank:
        raise AdapterRejectedError(
            f"{root / CONFIG_FILE}: rank r={config['r']} exceeds the engine's lora.max_lora_rank={max_lora_rank}"
        )
    if config["r"] != ref.rank:
        raise AdapterRejectedError(f"{root / CONFIG_FILE}: rank r={config['r']} but the AdapterRef says {ref.rank}")
    _check_safetensors(root / WEIGHTS_FILE)


def _check_safetensors(path: Path) -> None:
    """The safetensors header parses and every tensor lies inside the file: catches truncated or garbled weights."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AdapterRejectedError(f"cannot read adapter weights {path}: {exc.strerror}") from None
    problem = None
    if len(data) < 8:
        problem = f"{len(data)} bytes, shorter than a header"
    else:
        (header_len,) = struct.unpack("<Q", data[:8])
        body = len(data) - 8 - header_len
        try:
            header = json.loads(data[8 : 8 + header_len]) if body >= 0 else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            problem = "header is not valid JSON"
        else:
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            spans = {k: v.get("data_offsets") if isinstance(v, dict) else None for k, v in tensors.items()}
            garbled = [k for k, span in spans.items() if not _is_span(span)]
            if not tensors:
                problem = "holds no tensors"
            elif garbled:
                problem = f"tensor {garbled[0]!r} has no data_offsets [begin, end] of byte positions"
            elif max(span[1] for span in spans.values()) > body:  # type: ignore[index]
                problem = f"tensor data runs past the end of the file ({body} data bytes)"
    if problem is None:
        problem = _safetensors_problem(path)
    if problem:
        raise AdapterRejectedError(f"adapter weights {path} are corrupt: {problem}")


def _safetensors_problem(path: Path) -> str | None:
    """What safetensors itself says of the header (dtypes, shapes and offsets consistent); None when it opens."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):  # reads and checks the header only; no tensor is loaded
            return None
    except (SafetensorError, OSError, ValueError) as exc:
        return str(exc)


def _is_span(value: object) -> bool:
    """[begin, end]: two non-negative int byte positions in order (safetensors' data_offsets)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
        and 0 <= value[0] <= value[1]
    )


@dataclass
class ServingVersion:
    info: LoadedAdapter
    lora: EngineLora
    in_flight: int = 0
    retired: bool = False  # pushed out by newer versions; unloaded when in_flight reaches 0


class AdapterRegistry:
    def __init__(self, keep_versions: int) -> None:
        self.keep_versions = keep_versions
        self._serving: dict[str, list[ServingVersion]] = {}  # per name, oldest first
        self._draining: list[ServingVersion] = []  # retired, still in flight
        self._last_lora_id = 0

    def new_lora(self, ref: AdapterRef) -> EngineLora:
        self._last_lora_id += 1
        return EngineLora(self._last_lora_id, f"{ref.name}@v{ref.version}#{self._last_lora_id}", ref.path)

    def check_newer(self, ref: AdapterRef) -> None:
        serving = self._serving.get(ref.name)
        if serving and ref.version <= serving[-1].info.version:
            raise AdapterRejectedError(
                f"adapter {ref.name} v{ref.version} is not newer than the serving v{serving[-1].info.version}"
            )

    def acquire(self, name: str) -> ServingVersion:
        serving = self._serving.get(name)
        if not serving:
            known = ", ".join(sorted(self._serving)) or "none loaded"
            raise UnknownAdapterError(f"adapter {name!r} is not loaded (serving: {known})")
        version = serving[-1]
        version.in_flight += 1
        return version

    def release(self, version: ServingVersion) -> list[ServingVersion]:
        """End one request on `version`; returns the versions to unload now."""
        version.in_flight -= 1
        if version.retired and version.in_flight == 0:
            self._draining.remove(version)
            return [version]
        return []

    def add(self, version: ServingVersion) -> list[ServingVersion]:
        """Serve `version` as its name's newest; returns the versions to unload now."""
        serving = self._serving.setdefault(version.info.name, [])
        serving.append(version)
        retired = []
        while len(serving) > self.keep_versions:
            retired.append(serving.pop(0))
        return self._retire(retired)

    def remove(self, name: str) -> list[ServingVersion]:
        """Stop serving every version of `name`; returns the versions to unload now (the rest when they drain)."""
        return self._retire(self._serving.pop(name, []))

    def _retire(self, versions: list[ServingVersion]) -> list[ServingVersion]:
        unload = []
        for version in versions:
            version.retired = True
            if version.in_flight:
                self._draining.append(version)
            else:
                unload.append(version)
        return unload

    def loaded(self) -> list[LoadedAdapter]:
        return [v.info for versions in self._serving.values() for v in versions]

    def newest(self) -> dict[str, int]:
        return {name: versions[-1].info.version for name, versions in self._serving.items()}
