"""The smoke path of `make demo`: local Ray, the tiny model, a generation through the real vLLM CPU engine."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.ray]


def test_vllm_cpu_engine_generates_token_ids_and_logprobs(tiny_model_dir) -> None:
    import ray

    from services.smoke import run_smoke

    try:
        result = run_smoke("List the files.", max_tokens=12)
    finally:
        ray.shutdown()
    assert result["prompt_token_ids"][0] == 1  # <|im_start|>
    assert 1 <= len(result["token_ids"]) <= 12
    assert len(result["logprobs"]) == len(result["token_ids"])
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in result["logprobs"])
    assert result["finish_reason"] in {"length", "stop"}
    assert result["dashboard_url"].startswith("http://127.0.0.1:")
