"""The eight ClawGym personas and the fifteen file-management skills, shipped as package data.

The JSON files under fieldkit/gym/data/ are copies of the reference lists; the package never reads outside itself.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict


class PersonaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: str
    context: str
    skill_focus: tuple[str, ...]


def _load(name: str) -> dict:
    return json.loads(resources.files("fieldkit.gym").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def personas() -> tuple[PersonaSpec, ...]:
    return tuple(PersonaSpec.model_validate(p) for p in _load("personas.json")["personas"])


@cache
def skills() -> dict[str, str]:
    """Skill name -> one-line description."""
    return dict(_load("skills.json")["skills"])


def persona(role: str) -> PersonaSpec:
    for spec in personas():
        if spec.role == role:
            return spec
    raise KeyError(f"unknown persona {role!r}; known: {', '.join(p.role for p in personas())}")
