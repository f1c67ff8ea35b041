"""Shared fixtures. Tests use real components; the markers in pyproject.toml say which ones a test starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# No test may reach a model hub, and the vLLM CPU engine must not reserve its default multi-GB KV cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Qwen2 model, built once and cached under runs/models (as the demo does)."""
    from fieldkit.tiny_model import build_tiny_model

    return build_tiny_model(REPO / "runs" / "models")
