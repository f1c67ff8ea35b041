"""The smoke path of `fieldkit demo`: local Ray, the tiny model, the policy server on the vLLM CPU engine.

It proves the foundations every other piece stands on, in about a minute on 2 cores: one chat generation from the
base model, then a LoRA adapter hot-loaded into the running engine (verified by its probe) and a generation with it.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from fieldkit.config import RunConfig
from fieldkit.generation import ChatMessage, GenerateRequest
from services.cluster import connect
from services.policy import start_policy_server


def run_smoke(prompt: str = "List the files.", max_tokens: int = 16, config: RunConfig | None = None) -> dict[str, Any]:
    from fieldkit.training.lora_model import resolve_model_path
    from fieldkit.training.random_adapter import build_random_adapter

    started = time.perf_counter()
    config = config or RunConfig.model_validate({})
    cluster = connect()
    server = start_policy_server(config)
    try:
        request = GenerateRequest(messages=[ChatMessage(role="user", content=prompt)], max_tokens=max_tokens, seed=0)
        result = ray.get(server.generate.remote(request)).model_dump()
        model_dir = resolve_model_path(config.model, config.paths.models_dir)
        ref = build_random_adapter(model_dir, config.run_dir / "smoke-adapter", name="smoke", version=1)
        loaded = ray.get(server.load_adapter.remote(ref))
        adapted = ray.get(server.generate.remote(request.model_copy(update={"adapter": "smoke"})))
        dtype = ray.get(server.health.remote()).dtype
        ray.get(server.shutdown.remote())
    finally:
        ray.kill(server)
    result["adapter_load"] = loaded.model_dump()
    result["adapter_generation"] = adapted.model_dump(include={"token_ids", "text", "adapter", "adapter_version"})
    result["dashboard_url"] = cluster.dashboard_url
    result["model_dir"] = model_dir
    result["dtype"] = dtype
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
