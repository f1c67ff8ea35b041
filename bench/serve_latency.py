"""What the OpenAI-compatible endpoint costs on top of the engine: the same chat requests sent through the official
`openai` client to the Serve application (whose replica holds its engine in its own process), and straight to a
PolicyServer actor on the same config, the one rollouts call (the baseline, measured in the same run). One request
at a time, then 50 at once (plain and streamed), and one streamed 64-token reply: how many chunks it arrives in and
when the first comes. 50 streams are compared with 50 whole replies from the actor, and with 50 streams read from
the actor (its Ray streaming generator). Each burst kind's CPU time is split by process (this client, the server
holding the engine, the engine core, the rest of the box), since client and server share the same cores.

Streamed replies are relayed as the engine samples them, so time to first token is far below the whole reply's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEQUENTIAL = 20
CONCURRENT = 50
ROUNDS = 5
MAX_TOKENS = 16
LONG_TOKENS = 64
ROLES = ("client", "server", "engine", "other")
BURST_NAMES = {
    "direct": "whole replies, direct",
    "plain": "whole replies, endpoint",
    "direct_stream": "streams, direct",
    "stream": "streams, endpoint",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Task {i}: list the files in the workspace."}]


async def _direct(policy: Any, i: int) -> tuple[float, float, int]:
    """(total s, total s, completion tokens) of one chat request straight to the actor."""
    from fieldkit.generation import ChatMessage, GenerateRequest

    messages = [ChatMessage.model_validate(m) for m in _messages(i)]
    request = GenerateRequest(messages=messages, max_tokens=MAX_TOKENS, temperature=0.0, seed=i)
    started = time.perf_counter()
    result = await policy.generate.remote(request)
    total = time.perf_counter() - started
    return total, total, len(result.token_ids)


async def _direct_stream(policy: Any, i: int, window_s: float) -> tuple[float, float, int]:
    """(first token s, total s, tokens) of one streamed reply read straight from the actor (a Ray streaming
    generator), without HTTP."""
    from fieldkit.generation import ChatMessage, GenerateRequest

    messages = [ChatMessage.model_validate(m) for m in _messages(i)]
    request = GenerateRequest(messages=messages, max_tokens=MAX_TOKENS, temperature=0.0, seed=i)
    started = time.perf_counter()
    first, tokens = None, 0
    async for ref in policy.generate_stream.remote(request, window_s):
        piece = await ref
        if first is None and piece.token_ids:
            first = time.perf_counter() - started
        tokens += len(piece.token_ids)
    total = time.perf_counter() - started
    return first or total, total, tokens


async def _endpoint(client: Any, i: int, stream: bool) -> tuple[float, float, int]:
    """(first token s, total s, completion tokens) of one chat request through the endpoint."""
    started = time.perf_counter()
    kwargs = {"model": "tiny", "messages": _messages(i), "max_tokens": MAX_TOKENS, "temperature": 0.0, "seed": i}
    if not stream:
        reply = await client.chat.completions.create(**kwargs)
        total = time.perf_counter() - started
        return total, total, reply.usage.completion_tokens
    first, tokens = None, 0
    chunks = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    async for chunk in chunks:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    total = time.perf_counter() - started
    return first or total, total, tokens


async def _long_stream(client: Any) -> tuple[int, float, float, int]:
    """(content chunks, first chunk s, total s, tokens) of one streamed 64-token completion."""
    started = time.perf_counter()
    arrivals, tokens = [], 0
    kwargs = {"model": "tiny", "prompt": [1, 5, 9], "max_tokens": LONG_TOKENS, "temperature": 1.0, "seed": 11}
    async for chunk in await client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].text:
            arrivals.append(time.perf_counter() - started)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return len(arrivals), arrivals[0], time.perf_counter() - started, tokens


def _cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Every process's (role, CPU seconds so far): this process is the client, vLLM's engine core the engine, the
    Serve replica or PolicyServer actor (HTTP or Ray, and the engine's Python side) the server."""
    import psutil

    snapshot = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        title = " ".join(process.info["cmdline"] or [process.info["name"] or ""])
        role = "other"
        if process.pid == os.getpid():
            role = "client"
        elif "EngineCore" in title:
            role = "engine"
        elif "ServeReplica" in title or "PolicyServer" in title:
            role = "server"
        snapshot[process.pid] = (role, times.user + times.system)
    return snapshot


def _cpu_since(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    spent = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in _cpu_snapshot().items():
        spent[role] += seconds - before.get(pid, (role, 0.0))[1]
    return spent


async def _timed(burst: Any) -> tuple[list[tuple[float, float, int]], float]:
    """The per-request (first token s, total s, tokens) of one burst, and its wall time."""
    started = time.perf_counter()
    results = await burst
    return list(results), time.perf_counter() - started


async def _measure(policy: Any, base_url: str, window_s: float) -> dict[str, float]:
    """Each kind of burst ROUNDS times, interleaved with its baseline so that both see the same machine; latencies
    are pooled over the rounds, throughput is tokens over summed wall time."""
    import openai

    # the SDK's aiohttp transport: what a client sending many requests at once would pick, and its CPU shares these
    # cores with the endpoint
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="unused", max_retries=0, timeout=600, http_client=openai.DefaultAioHttpClient()
    )
    kinds = {
        "direct": lambda: asyncio.gather(*(_direct(policy, i) for i in range(CONCURRENT))),
        "plain": lambda: asyncio.gather(*(_endpoint(client, i, False) for i in range(CONCURRENT))),
        "direct_stream": lambda: asyncio.gather(*(_direct_stream(policy, i, window_s) for i in range(CONCURRENT))),
        "stream": lambda: asyncio.gather(*(_endpoint(client, i, True) for i in range(CONCURRENT))),
    }
    try:
        for burst in kinds.values():  # warm every path
            await burst()
        direct_seq, endpoint_seq = [], []
        for i in range(SEQUENTIAL):
            direct_seq.append((await _direct(policy, i))[1])
            endpoint_seq.append((await _endpoint(client, i, stream=False))[1])
        runs: dict[str, list[tuple[float, float, int]]] = {kind: [] for kind in kinds}
        walls = dict.fromkeys(kinds, 0.0)
        cpu = {kind: dict.fromkeys(ROLES, 0.0) for kind in kinds}
        for _ in range(ROUNDS):
            for kind, burst in kinds.items():
                before = _cpu_snapshot()
                results, wall = await _timed(burst())
                for role, seconds in _cpu_since(before).items():
                    cpu[kind][role] += seconds
                runs[kind] += results
                walls[kind] += wall
        await _long_stream(client)  # warm
        chunks, first_s, long_s, long_tokens = await _long_stream(client)
    finally:
        await client.close()

    def totals(kind: str) -> list[float]:
        return [total for _, total, _ in runs[kind]]

    def firsts(kind: str) -> list[float]:
        return [first for first, _, _ in runs[kind]]

    def rate(kind: str) -> float:
        return sum(n for _, _, n in runs[kind]) / walls[kind]

    cpu_per_1k_tokens = {
        f"cpu_{kind}_{role}_s_per_1k_tokens": 1000 * seconds / sum(n for _, _, n in runs[kind])
        for kind, roles in cpu.items()
        for role, seconds in roles.items()
    }
    return cpu_per_1k_tokens | {
        "direct_seq_p50_s": statistics.median(direct_seq),
        "endpoint_seq_p50_s": statistics.median(endpoint_seq),
        "seq_overhead_ratio": statistics.median(endpoint_seq) / statistics.median(direct_seq),
        "direct_50_p50_s": statistics.median(totals("direct")),
        "direct_50_p99_s": _p(totals("direct"), 0.99),
        "plain_50_p50_s": statistics.median(totals("plain")),
        "plain_50_p50_ratio": statistics.median(totals("plain")) / statistics.median(totals("direct")),
        "plain_50_p99_s": _p(totals("plain"), 0.99),
        "stream_50_p50_s": statistics.median(totals("stream")),
        "stream_50_p99_s": _p(totals("stream"), 0.99),
        "stream_50_first_token_p50_s": statistics.median(firsts("stream")),
        "stream_50_first_token_p99_s": _p(firsts("stream"), 0.99),
        "stream_50_p50_ratio": statistics.median(totals("stream")) / statistics.median(totals("direct")),
        "stream_50_p99_ratio": _p(totals("stream"), 0.99) / _p(totals("direct"), 0.99),
        "stream_50_tokens_per_s": rate("stream"),
        "stream_50_throughput_ratio": rate("stream") / rate("direct"),
        "direct_stream_50_p50_s": statistics.median(totals("direct_stream")),
        "direct_stream_50_p99_s": _p(totals("direct_stream"), 0.99),
        "direct_stream_50_first_token_p50_s": statistics.median(firsts("direct_stream")),
        "direct_stream_50_first_token_p99_s": _p(firsts("direct_stream"), 0.99),
        "direct_stream_50_tokens_per_s": rate("direct_stream"),
        "stream_50_vs_direct_streams": rate("stream") / rate("direct_stream"),
        "stream_50_errors": 0.0,  # gather raises on the first error: reaching here means none
        "stream_64_chunks": float(chunks),
        "stream_64_tokens": float(long_tokens),
        "stream_64_first_chunk_s": first_s,
        "stream_64_total_s": long_s,
        "stream_64_first_fraction": first_s / long_s,
    }


def main(engine: str = "vllm") -> dict[str, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import ray
    from ray import serve

    from fieldkit.config import RunConfig
    from services.policy import start_policy_server
    from services.serve import start_endpoint

    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig.model_validate(
            {
                "model": {"engine": engine, "max_model_len": 512},
                "paths": {"models_dir": str(REPO / "runs" / "models"), "runs_dir": tmp},
                "serve": {"port": _free_port(), "app_name": "fieldkit-bench"},
            }
        )
        ray.init(address="local", num_cpus=4, include_dashboard=False)  # never a `ray start` cluster
        try:
            started = time.perf_counter()
            endpoint = start_endpoint(config)
            start_s = time.perf_counter() - started
            policy = start_policy_server(config)
            figures = asyncio.run(_measure(policy, endpoint.base_url, config.serve.stream_window_s))
        finally:
            serve.shutdown()
            ray.shutdown()
    figures["endpoint_start_s"] = start_s
    rows = [
        ("1 request, direct to the actor", figures["direct_seq_p50_s"], 1.0, "itself"),
        ("1 request, endpoint (p50)", figures["endpoint_seq_p50_s"], figures["seq_overhead_ratio"], "direct"),
        (f"{CONCURRENT} at once, direct p50", figures["direct_50_p50_s"], 1.0, "itself"),
        (f"{CONCURRENT} at once, endpoint p50", figures["plain_50_p50_s"], figures["plain_50_p50_ratio"], "direct"),
        (f"{CONCURRENT} streams, endpoint p50", figures["stream_50_p50_s"], figures["stream_50_p50_ratio"], "direct"),
        (f"{CONCURRENT} streams, endpoint p99", figures["stream_50_p99_s"], figures["stream_50_p99_ratio"], "dir. p99"),
        (f"{CONCURRENT} streams, first token p50", figures["stream_50_first_token_p50_s"], None, ""),
        (f"{CONCURRENT} streams, first token p99", figures["stream_50_first_token_p99_s"], None, ""),
        (f"{CONCURRENT} streams direct, p50", figures["direct_stream_50_p50_s"], None, ""),
        (f"{CONCURRENT} streams direct, p99", figures["direct_stream_50_p99_s"], None, ""),
        (f"{CONCURRENT} streams direct, first token p50", figures["direct_stream_50_first_token_p50_s"], None, ""),
        (f"{CONCURRENT} streams direct, first token p99", figures["direct_stream_50_first_token_p99_s"], None, ""),
    ]
    print(
        f"serve latency, {engine} engine, tiny model, {MAX_TOKENS} tokens per reply, bursts of {CONCURRENT} x {ROUNDS} "
        f"rounds (endpoint start {start_s:.0f} s)"
    )
    print(f"{'measure':<36}{'s':>9}{'ratio':>8}  baseline")
    for name, seconds, ratio, baseline in rows:
        print(f"{name:<36}{seconds:>9.3f}{'' if ratio is None else f'{ratio:.2f}':>8}  {baseline}")
    print(
        f"{CONCURRENT} streams: {figures['stream_50_tokens_per_s']:.0f} tokens/s through the endpoint, "
        f"{figures['stream_50_throughput_ratio']:.2f}x the direct burst's rate (whole replies), "
        f"{figures['stream_50_vs_direct_streams']:.2f}x the direct streams' "
        f"({figures['direct_stream_50_tokens_per_s']:.0f} tokens/s)"
    )
    print(
        f"one streamed {figures['stream_64_tokens']:.0f}-token reply: {figures['stream_64_chunks']:.0f} chunks, "
        f"first after {figures['stream_64_first_chunk_s']:.3f} s of {figures['stream_64_total_s']:.3f} s "
        f"({figures['stream_64_first_fraction']:.0%})"
    )
    print(f"CPU seconds per 1000 tokens, by process: {'  '.join(f'{role:>6}' for role in ROLES)}")
    for kind, name in BURST_NAMES.items():
        seconds = [figures[f"cpu_{kind}_{role}_s_per_1k_tokens"] for role in ROLES]
        print(f"  {CONCURRENT} {name:<36}{'  '.join(f'{s:6.3f}' for s in seconds)}")
    return figures


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
