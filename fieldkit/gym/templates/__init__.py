"""Workspace templates and task recipes, one module per persona (see base.py for what a module provides)."""

from __future__ import annotations

from types import ModuleType

from fieldkit.gym.templates import (
    academic_author,
    backend_developer,
    data_science_researcher,
    devops_engineer,
    embedded_firmware_dev,
    indie_game_dev,
    ml_engineer,
    technical_writer,
)

TEMPLATES: dict[str, ModuleType] = {
    m.ROLE: m
    for m in (
        indie_game_dev,
        data_science_researcher,
        ml_engineer,
        technical_writer,
        backend_developer,
        devops_engineer,
        academic_author,
        embedded_firmware_dev,
    )
}
