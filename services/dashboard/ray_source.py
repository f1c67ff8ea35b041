"""What the dashboard shows of the cluster, read from Ray itself; nothing is stored here.

- Actors: the Ray dashboard's actor table (`/logical/actors`), which joins the state API's actors (state, node,
  pid, required resources) with the node reporters' per-process stats (CPU %, resident memory, GPU memory).
- Nodes: the Ray dashboard's node summary (CPU %, memory, GPUs).
- Gauges: what fieldkit actors export through `ray.util.metrics` (the policy server's busy fraction and adapter
  versions, the hf engine's requests in flight and tokens/s; the sandbox pools' leased and idle counts) and vLLM's
  own metrics, which the vLLM engine exports through the same pipeline (`ray_vllm_*`: running and waiting requests,
  KV-cache use, generated tokens, time to first token), scraped from the metrics endpoints Ray lists for
  Prometheus (`/api/prometheus/sd`) and tied to their actor by the WorkerId label Ray adds.

Ray exports gauges about every 10 s, so those figures lag by up to that much. The Ray dashboard runs with token
authentication in Ray 2.60; the token is read the way Ray's own clients read it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

GAUGE_PREFIXES = ("ray_fieldkit_", "ray_vllm_")
MAX_DEAD_ACTORS = 20  # the newest dead actors stay visible (why did it die?); older ones are in Ray's dashboard
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str  # without Ray's "ray_" prefix, e.g. fieldkit_policy_tokens_per_s
    labels: dict[str, str]
    value: float


def parse_samples(text: str, session: str | None) -> list[Sample]:
    """fieldkit and vLLM samples of a Prometheus text exposition, only those of `session` (other clusters may share
    ports)."""
    samples = []
    for line in text.splitlines():
        if not line.startswith(GAUGE_PREFIXES):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        if session is not None and labels.get("SessionName", session) != session:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        samples.append(Sample(match["name"].removeprefix("ray_"), labels, value))
    return samples


def ray_auth_headers() -> dict[str, str]:
    """The Bearer token Ray's clients send: $RAY_AUTH_TOKEN, else the file at $RAY_AUTH_TOKEN_PATH or ~/.ray."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        token = path.read_text().strip() if path.is_file() else None
    return {"Authorization": f"Bearer {token}"} if token else {}


def actor_row(actor: dict[str, Any], samples: list[Sample]) -> dict[str, Any]:
    address = actor.get("address") or {}
    stats = actor.get("processStats") or {}
    worker = address.get("workerId")
    alive = actor.get("state") == "ALIVE"
    gauges = {s.name: s.value for s in samples if alive and worker and s.labels.get("WorkerId") == worker}
    busy_gauges = [v for k, v in gauges.items() if k.endswith("busy_fraction")]
    cpu = stats.get("cpuPercent")
    busy, busy_source = None, None
    if busy_gauges:
        busy, busy_source = min(1.0, max(busy_gauges)), "gauge"
    elif alive and cpu is not None:
        busy, busy_source = min(1.0, cpu / 100.0), "cpu"
    return {
        "actor_id": actor.get("actorId"),
        "worker_id": worker,
        "class_name": actor.get("actorClass") or actor.get("className") or "",
        "name": actor.get("name") or "",
        "state": actor.get("state"),
        "node_id": address.get("nodeId"),
        "node_ip": address.get("ipAddress"),
        "pid": actor.get("pid") or None,
        "restarts": int(actor.get("numRestarts") or 0),
        "required": actor.get("requiredResources") or {},
        "cpu_percent": cpu,
        "rss_bytes": (stats.get("memoryInfo") or {}).get("rss"),
        "gpu_memory_mb": stats.get("gpuMemoryUsage"),
        "gpu_utilization": stats.get("gpuUtilization"),
        "busy": busy,
        "busy_source": busy_source,
        "gauges": gauges,
        "start_time": actor.get("startTime"),
        "death": actor.get("exitDetail") if actor.get("state") == "DEAD" else None,
    }


def order_actors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live actors first (by class, then name), then the newest dead ones."""
    live = sorted((r for r in rows if r["state"] != "DEAD"), key=lambda r: (r["class_name"], r["name"]))
    dead = sorted((r for r in rows if r["state"] == "DEAD"), key=lambda r: -(r["start_time"] or 0))
    return live + dead[:MAX_DEAD_ACTORS]


def node_row(summary: dict[str, Any], logical: dict[str, Any]) -> dict[str, Any]:
    raylet = summary.get("raylet") or {}
    node_id = raylet.get("nodeId")
    mem = summary.get("mem") or [0, 0, 0, 0]
    return {
        "node_id": node_id,
        "ip": summary.get("ip"),
        "hostname": summary.get("hostname"),
        "state": raylet.get("state"),
        "cpu_percent": summary.get("cpu"),
        "mem_total": mem[0],
        "mem_used": mem[3] if len(mem) > 3 else mem[0] - mem[1],
        "gpus": [
            {
                "name": g.get("name"),
                "utilization": g.get("utilizationGpu"),
                "memory_used_mb": g.get("memoryUsed"),
                "memory_total_mb": g.get("memoryTotal"),
            }
            for g in summary.get("gpus") or []
        ],
        "resources": str(logical.get(node_id, "")) if node_id else "",  # Ray's "used/total resource" lines
    }


class EngineCounters:
    """vLLM's counters as figures: generated tokens/s and mean time to first token between the two newest values
    that differ (Ray exports about every 10 s; the page polls more often)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[tuple[float, float, float], float] | None = None
        self.figures: dict[str, float | None] = {"tokens_per_s": None, "ttft_s": None}

    def update(self, tokens: float, ttft_sum: float, ttft_count: float) -> dict[str, float | None]:
        now, current = self._clock(), (tokens, ttft_sum, ttft_count)
        if self._last is not None and current != self._last[0]:
            (tokens0, sum0, count0), then = self._last
            if tokens >= tokens0 and now > then:  # else the engine restarted: its counters began again
                ttft = (ttft_sum - sum0) / (ttft_count - count0) if ttft_count > count0 else self.figures["ttft_s"]
                self.figures = {"tokens_per_s": (tokens - tokens0) / (now - then), "ttft_s": ttft}
        if self._last is None or current != self._last[0]:
            self._last = (current, now)
        return self.figures


def summarise(
    actors: list[dict[str, Any]], samples: list[Sample], counters: EngineCounters | None = None
) -> dict[str, Any]:
    """The engine and sandbox-pool figures over live actors (a dead actor's last gauge values are not current).
    A vLLM engine's figures are vLLM's own; the hf engine's come from the policy server's gauges."""
    live_workers = {a["worker_id"] for a in actors if a["state"] == "ALIVE" and a["worker_id"]}
    live = [s for s in samples if s.labels.get("WorkerId") in live_workers]

    def total(name: str) -> float | None:
        values = [s.value for s in live if s.name == name]
        return sum(values) if values else None

    adapters = {s.labels["adapter"]: int(s.value) for s in live if s.name == "fieldkit_policy_adapter_version"}
    running = total("vllm_num_requests_running")
    vllm: dict[str, float | None] | None = None
    waiting = 0.0
    if running is not None:
        kv = [s.value for s in live if s.name == "vllm_kv_cache_usage_perc"]
        tokens = total("vllm_generation_tokens_total") or total("vllm_generation_tokens") or 0.0
        ttft = (total("vllm_time_to_first_token_seconds_sum") or 0.0, total("vllm_time_to_first_token_seconds_count"))
        rates = (counters or EngineCounters()).update(tokens, ttft[0], ttft[1] or 0.0)
        waiting = total("vllm_num_requests_waiting") or 0.0
        vllm = {"running": running, "waiting": waiting, "kv_cache_usage": max(kv or [0.0]), **rates}
    pools: dict[str, dict[str, Any]] = {}
    for s in live:
        if s.name in ("fieldkit_sandbox_leased", "fieldkit_sandbox_idle"):
            key = f"{s.labels.get('node', '?')}/{s.labels.get('backend', '?')}"
            pools.setdefault(key, {"pool": key, "leased": 0.0, "idle": 0.0})[s.name.rsplit("_", 1)[1]] = s.value
    return {
        "engine": {
            "requests_in_flight": running + waiting
            if running is not None
            else total("fieldkit_policy_requests_in_flight"),
            "tokens_per_s": vllm["tokens_per_s"] if vllm else total("fieldkit_policy_tokens_per_s"),
            "adapters": adapters,
            "vllm": vllm,
        },
        "pools": sorted(pools.values(), key=lambda p: p["pool"]),
    }


class RayObserver:
    """Reads one Ray cluster through its dashboard URL (e.g. http://127.0.0.1:8265)."""

    def __init__(self, dashboard_url: str, timeout_s: float = 5.0) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: str | None = None
        self._counters = EngineCounters()

    async def snapshot(self) -> dict[str, Any]:
        async with httpx.AsyncClient(headers=ray_auth_headers(), timeout=self.timeout_s) as client:
            try:
                actors, nodes, samples = await asyncio.gather(
                    self._get(client, "/logical/actors"),
                    self._get(client, "/nodes?view=summary"),
                    self._samples(client),
                )
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = f"cannot read Ray at {self.dashboard_url}: {type(exc).__name__}: {exc}"
                return {"ok": False, "error": error, "actors": [], "nodes": [], **summarise([], [])}
        rows = [actor_row(a, samples) for a in (actors.get("actors") or {}).values()]
        logical = nodes.get("node_logical_resources") or {}
        return {
            "ok": True,
            "error": None,
            "actors": order_actors(rows),
            "nodes": [node_row(n, logical) for n in nodes.get("summary") or []],
            **summarise(rows, samples, self._counters),
        }

    async def _get(self, client: httpx.AsyncClient, path: str) -> dict[str, Any]:
        response = await client.get(self.dashboard_url + path)
        response.raise_for_status()
        body = response.json()
        return body.get("data", body) if isinstance(body, dict) else {}

    async def _samples(self, client: httpx.AsyncClient) -> list[Sample]:
        if self._session is None:
            self._session = (await client.get(self.dashboard_url + "/api/version")).json().get("session_name")
        response = await client.get(self.dashboard_url + "/api/prometheus/sd")
        response.raise_for_status()
        targets = [t for group in response.json() for t in group.get("targets", [])]

        async def scrape(target: str) -> list[Sample]:
            try:
                text = (await client.get(f"http://{target}/metrics")).text
            except httpx.HTTPError:
                return []  # a node going away mid-scrape: its actors show as such in the actor table
            return parse_samples(text, self._session)

        return [s for found in await asyncio.gather(*(scrape(t) for t in targets)) for s in found]
