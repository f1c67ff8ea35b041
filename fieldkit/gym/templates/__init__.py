"""Workspace templates and task recipes, one module per persona (see base.py for what a module provides)."""

from __future__ import annotations

from types import ModuleType

from fieldkit.gym.templates import indie_game_dev

TEMPLATES: dict[str, ModuleType] = {m.ROLE: m for m in (indie_game_dev,)}
