"""Workspace templates and task recipes, one module per persona (see base.py for what a module provides)."""

from __future__ import annotations

from types import ModuleType

from fieldkit.gym.templates import data_science_researcher, indie_game_dev, ml_engineer

TEMPLATES: dict[str, ModuleType] = {m.ROLE: m for m in (indie_game_dev, data_science_researcher, ml_engineer)}
