"""The smoke path of `make demo`: local Ray, the tiny model, the policy server on the real vLLM CPU engine, a
LoRA adapter hot-loaded and verified."""

from __future__ import annotations

import math

import pytest

from fieldkit.config import RunConfig

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
    assert result["adapter_version"] == -1  # the first generation came from the base model
    load = result["adapter_load"]
    assert load["version"] == 1 and load["probe"]["passed"] and load["probe"]["distinguishable_from_base"]
    assert result["adapter_generation"]["adapter_version"] == 1
    assert result["adapter_generation"]["token_ids"]
    # the default config's dtype (auto) served LoRA: float32 on this CPU engine, whatever the CPU's ISA
    assert result["dtype"] == RunConfig().engine_dtype == "float32"
