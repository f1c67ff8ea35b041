"""Adapter publish -> first token served with it: hot-load into the running engine (load, probe verification, one
token) against the reference's way, a full engine restart with the adapter (stop the engine, start a new one, load
the adapter, one token), both measured in this run on the PolicyServer actor. Then generation throughput: single
requests one after another against 16 in flight at once, base model and with an adapter.

Run: `python -m bench.adapter_hotload [bfloat16|float32]` (default: the config's dtype, bfloat16).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig
from fieldkit.generation import ChatMessage, GenerateRequest
from fieldkit.training.records import AdapterRef

VERSIONS = 5
NEW_TOKENS = 64
BATCH = 16


def first_token_s(server: Any, adapter: str | None) -> float:
    import ray

    start = time.perf_counter()
    ray.get(server.generate.remote(GenerateRequest(prompt_token_ids=[1, 5, 9], max_tokens=1, adapter=adapter)))
    return time.perf_counter() - start


def tokens_per_s(server: Any, n_parallel: int, rounds: int, adapter: str | None) -> float:
    """Generated tokens per wall second, `n_parallel` requests in flight, `rounds` times over."""
    import ray

    tokens, wall = 0, 0.0
    for r in range(rounds):
        requests = [
            GenerateRequest(
                messages=[ChatMessage(role="user", content=f"List the files, round {r}.")],
                max_tokens=NEW_TOKENS,
                seed=r * n_parallel + i,
                adapter=adapter,
            )
            for i in range(n_parallel)
        ]
        start = time.perf_counter()
        results = ray.get([server.generate.remote(q) for q in requests])
        wall += time.perf_counter() - start
        tokens += sum(len(x.token_ids) for x in results)
    return tokens / wall


def main(dtype: str = "bfloat16") -> dict[str, float]:
    import ray

    from fieldkit.training.lora_model import resolve_model_path
    from fieldkit.training.random_adapter import build_random_adapter
    from services.policy import start_policy_server

    config = RunConfig.model_validate({"model": {"engine": "vllm", "dtype": dtype, "max_model_len": 1024}})
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=4, include_dashboard=False)  # never join a `ray start` cluster
    model_dir = resolve_model_path(config.model, config.paths.models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        refs: list[AdapterRef] = [
            build_random_adapter(model_dir, Path(tmp) / f"v{v}", name="bench", version=v, seed=v)
            for v in range(1, VERSIONS + 2)
        ]
        start = time.perf_counter()
        server = start_policy_server(config)
        cold_start_s = time.perf_counter() - start

        single_base = tokens_per_s(server, 1, 4, None)
        batched_base = tokens_per_s(server, BATCH, 2, None)

        hotload, verify = [], []
        for ref in refs[:VERSIONS]:
            start = time.perf_counter()
            info = ray.get(server.load_adapter.remote(ref))
            hotload.append(time.perf_counter() - start + first_token_s(server, "bench"))
            verify.append(info.verify_s)
        single_lora = tokens_per_s(server, 1, 4, "bench")
        batched_lora = tokens_per_s(server, BATCH, 2, "bench")

        # The reference's way: the new version arrives, the engine is stopped and started again with it.
        start = time.perf_counter()
        ray.get(server.shutdown.remote())
        ray.kill(server)
        server = start_policy_server(config)
        ray.get(server.load_adapter.remote(refs[VERSIONS]))
        first_token_s(server, "bench")
        restart_s = time.perf_counter() - start
        ray.get(server.shutdown.remote())
        ray.kill(server)
    if started_ray:
        ray.shutdown()

    hotload_s = statistics.median(hotload)
    figures = {
        "cold_start_s": cold_start_s,
        "restart_publish_to_token_s": restart_s,
        "hotload_publish_to_token_s": hotload_s,
        "hotload_max_s": max(hotload),
        "probe_verify_s": statistics.median(verify),
        "restart_over_hotload": restart_s / hotload_s,
        "single_tokens_per_s": single_base,
        "batched_tokens_per_s": batched_base,
        "batched_over_single": batched_base / single_base,
        "single_lora_tokens_per_s": single_lora,
        "batched_lora_tokens_per_s": batched_lora,
        "lora_over_base_batched": batched_lora / batched_base,
    }
    print(f"policy server, vLLM CPU engine, tiny model, {dtype}")
    print(f"{'measure':<42}{'value':>10}{'ratio':>9}  baseline")
    rows = [
        ("restart with adapter -> first token (s)", restart_s, 1.0, "itself"),
        (f"hot-load -> first token, median of {VERSIONS} (s)", hotload_s, restart_s / hotload_s, "restart / hot-load"),
        ("  of which probe verification (s)", figures["probe_verify_s"], None, ""),
        ("single request (tokens/s)", single_base, 1.0, "itself"),
        (f"{BATCH} in flight (tokens/s)", batched_base, batched_base / single_base, "single"),
        ("single request, LoRA (tokens/s)", single_lora, single_lora / single_base, "single, base"),
        (f"{BATCH} in flight, LoRA (tokens/s)", batched_lora, batched_lora / batched_base, f"{BATCH}, base"),
    ]
    for name, value, ratio, baseline in rows:
        shown = f"{ratio:>9.1f}" if ratio is not None else " " * 9
        print(f"{name:<42}{value:>10.3f}{shown}  {baseline}")
    return figures


if __name__ == "__main__":
    main(*sys.argv[1:2])
