"""`--set a.b=v` overrides of a RunConfig, as `fieldkit train`, `python -m services.train` and `fieldkit config
explain` take them.

A value is read as YAML (`8` is an int, `0.4` a float, `[tensorboard, mlflow]` a list, `null` None), then the
whole config is validated by RunConfig as a YAML file would be, so an override can never slip past a rule a file
must obey. A key that names no field is refused before anything is validated, with the closest valid key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fieldkit.config import ConfigError, RunConfig, closest_key, yaml_mapping


def parse_override(text: str) -> tuple[list[str], Any]:
    """'rollout.group_size=8' -> (['rollout', 'group_size'], 8); a ConfigError naming the override otherwise."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--set", [f"{text!r}: expected KEY=VALUE, e.g. rollout.group_size=8"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError("--set", [f"{key} = {raw!r}: not a YAML value ({exc.__class__.__name__})"]) from exc
    path = key.split(".")
    _check_key(path)
    return path, value


def _check_key(path: list[str]) -> None:
    """Refuse a key that names no field of RunConfig, or names a whole section (its keys are set one by one)."""
    model: type[BaseModel] = RunConfig
    for depth, part in enumerate(path):
        dotted = ".".join(path[: depth + 1])
        if part not in model.model_fields:
            near = closest_key(".".join(path))
            hint = f"; did you mean {near}?" if near else ""
            what = "unknown key" if depth == len(path) - 1 else f"no section {dotted}"
            raise ConfigError("--set", [f"{'.'.join(path)}: {what}{hint}"])
        annotation = model.model_fields[part].annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth == len(path) - 1 and is_section:
            example = next(iter(annotation.model_fields))  # type: ignore[union-attr]
            raise ConfigError("--set", [f"{dotted} is a section: set one of its keys, e.g. {dotted}.{example}=..."])
        if depth < len(path) - 1 and not is_section:
            raise ConfigError("--set", [f"{'.'.join(path)}: {dotted} is a value, not a section"])
        if is_section:
            model = annotation  # type: ignore[assignment]


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of a config mapping with each `KEY=VALUE` set, later ones winning."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    parsed, problems = [], []
    for text in overrides:  # every bad override reported at once, as a file's problems are
        try:
            parsed.append(parse_override(text))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError("--set", problems)
    for path, value in parsed:
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[path[-1]] = value
    return merged


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig of a YAML file (None: the defaults) with `--set` overrides applied, validated as one.

    Errors are one ConfigError listing every problem; the source names the file and that overrides were applied.
    """
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "defaults"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(source, [f"cannot read file: {exc.strerror}"]) from exc
        data = yaml_mapping(text, source)
    merged = apply_overrides(data, overrides)
    return RunConfig.from_data(merged, source + (" with --set " + " ".join(overrides) if overrides else ""))


def overridden_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys a list of overrides sets (for `config explain` to mark)."""
    return {".".join(parse_override(text)[0]) for text in overrides}
