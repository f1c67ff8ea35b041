"""The hardware and model catalogues: package data (hardware.yaml, models.yaml) plus the user's own files.

A user file is YAML or JSON with a `hardware:` and/or a `models:` mapping of name -> fields, the same schema as the
shipped files; its entries add to the catalogue or replace a shipped entry of the same name. Files come from
$FIELDKIT_CATALOG (paths separated by os.pathsep) and from `fieldkit plan --catalog PATH`, later files winning.
A model can also be a local Hugging Face config.json (or the directory holding it) instead of a name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from fieldkit.capabilities.architecture import ModelArch
from fieldkit.capabilities.errors import PlanInputError, from_validation

CATALOG_ENV = "FIELDKIT_CATALOG"
GB = 1e9  # the planner reports decimal GB, as vendors label memory


class Hardware(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    label: str
    memory_gb: float = Field(gt=0, description="labelled device memory, 10^9 bytes")
    unified_memory: bool = Field(False, description="CPU and GPU share this memory (GB10): one pool for everything")
    bandwidth_gbs: float = Field(gt=0, description="memory bandwidth, GB/s")
    interconnect: str
    interconnect_gbs: float = Field(gt=0, description="per-GPU link bandwidth, GB/s")
    bf16_tflops: float = Field(gt=0, description="dense BF16 tensor throughput")
    gpus_per_node: PositiveInt = Field(8, description="tensor-parallel groups stay within a node")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * GB


@dataclass
class Catalogue:
    hardware: dict[str, Hardware] = field(default_factory=dict)
    models: dict[str, ModelArch] = field(default_factory=dict)

    def gpu(self, name: str) -> Hardware:
        key = name.strip().lower()
        if key not in self.hardware:
            raise PlanInputError("gpu", f"unknown GPU {name!r}; known: {', '.join(sorted(self.hardware))}")
        return self.hardware[key]

    def model(self, name_or_path: str) -> ModelArch:
        """A catalogue name (or its hf_id), or a local config.json / model directory."""
        path = Path(name_or_path).expanduser()
        if path.is_dir() or path.suffix == ".json":
            return read_hf_config(path)
        key = normalise_model_name(name_or_path)
        by_hf_id = {normalise_model_name(m.hf_id): m for m in self.models.values() if m.hf_id}
        found = self.models.get(key) or by_hf_id.get(key)
        if found is None:
            raise PlanInputError(
                "model",
                f"unknown model {name_or_path!r}; known: {', '.join(sorted(self.models))} (or a config.json path)",
            )
        return found


def normalise_model_name(name: str) -> str:
    """'Qwen/Qwen2.5-7B-Instruct' and 'qwen2.5-7b' name the same architecture: the instruct tune shares the shape."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    return key.removesuffix("-instruct")


def read_hf_config(path: Path) -> ModelArch:
    config_file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(config_file.read_text())
    except OSError as exc:
        raise PlanInputError("config", f"cannot read {config_file}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise PlanInputError("config", f"{config_file} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(config, dict):
        raise PlanInputError("config", f"{config_file} must hold a JSON object")
    name = config_file.parent.name if config_file.name == "config.json" else config_file.stem
    return ModelArch.from_hf_config(config, name=name, source=str(config_file))


def load_catalogue(extra_files: list[Path] | None = None) -> Catalogue:
    """The shipped catalogues, then $FIELDKIT_CATALOG, then `extra_files`; a later entry replaces one of its name."""
    catalogue = Catalogue()
    package = resources.files("fieldkit.capabilities")
    for shipped in ("hardware.yaml", "models.yaml"):
        _merge(catalogue, yaml.safe_load(package.joinpath(shipped).read_text()), f"fieldkit/capabilities/{shipped}")
    env_files = [Path(p) for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p]
    for path in [*env_files, *(extra_files or [])]:
        _merge(catalogue, _read_user_file(path), str(path))
    return catalogue


def _read_user_file(path: Path) -> Any:
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise PlanInputError("catalog", f"cannot read {path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)  # JSON is YAML, so one parser reads both
    except yaml.YAMLError as exc:
        raise PlanInputError("catalog", f"{path} is not valid YAML/JSON: {exc}") from exc


def _merge(catalogue: Catalogue, data: Any, source: str) -> None:
    if not isinstance(data, dict) or not set(data) <= {"hardware", "models"} or not data:
        raise PlanInputError("catalog", f"{source} must be a mapping with 'hardware' and/or 'models' sections")
    sections: list[tuple[str, dict[str, Any], type[BaseModel]]] = [
        ("hardware", catalogue.hardware, Hardware),  # type: ignore[list-item]
        ("models", catalogue.models, ModelArch),  # type: ignore[list-item]
    ]
    for section, target, model in sections:
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise PlanInputError("catalog", f"{source}: '{section}' must map names to fields")
        for name, fields in entries.items():
            if not isinstance(fields, dict):
                raise PlanInputError("catalog", f"{source}: {section}.{name} must be a mapping of fields")
            key = str(name).lower()
            try:
                target[key] = model.model_validate({**fields, "name": key})
            except ValidationError as exc:
                raise from_validation(f"{source}: {section}.{key}", exc) from exc
