"""The policy — base model plus verified, hot-loaded LoRA versions — as a Ray actor (PolicyServer), what rollouts
and the learner call, or in a serve replica's own process (services.serve.app: one Ray hop less per request).

Async: many generate/score calls in flight at once (the engine batches them); adapter loads are serialised among
themselves but never pause generation. A new adapter version is loaded under a new engine LoRA id, its probe is
scored through the engine, and only a version whose probe matches the learner's is served; otherwise it is
unloaded again and the previous version keeps serving. Bad input raises a PolicyError naming the field; the server
keeps serving. Load figures go to Ray gauges (the dashboard reads them) and to `health()`.

A server whose process dies (OOM, kill -9) is restarted by Ray: the new process starts its engine at its first
call, reloads the adapters it loaded last (the newest version of each name, as many as `lora.max_loras`; from a
record it rewrites after each load), and only then answers the calls Ray retries, so rollouts get the adapter
they asked for, never the base by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

from fieldkit.chat_tokens import render
from fieldkit.config import LoraConfig, ModelConfig, RunConfig
from fieldkit.generation import (
    BASE_VERSION,
    AdapterRejectedError,
    GenerateDelta,
    GenerateRequest,
    GenerateResult,
    LoadedAdapter,
    PolicyError,
    PolicyHealth,
    PromptTooLongError,
)
from fieldkit.machine import ALLOW_BF16_LORA_ENV
from fieldkit.storage import Storage, StorageError, fetch_dir
from fieldkit.training.probe import check_probe
from fieldkit.training.records import AdapterRef
from services.logs import capture_actor_output
from services.policy.adapters import AdapterRegistry, ServingVersion, inspect_adapter_dir
from services.policy.engine import create_engine
from services.policy.engine_start import EngineStartError
from services.policy.stats import ServerStats
from services.policy.stream import coalesce

log = logging.getLogger(__name__)

ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time
    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GB; the CPU default would take 4+
    # The engine-core process runs the model itself. vllm-cpu otherwise hands each step to a worker process that
    # spins for 1 s after every step it reads, a whole core taken from the mesh (bench/serve_latency: the worker
    # used as much CPU as the engine itself); on a GPU with one device, vLLM runs this way already.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
GAUGE_PERIOD_S = 2.0
MAX_RESTARTS = 3  # a server that dies at every start (a model that no longer fits) must not restart forever


class Policy:
    """The engine, its adapter versions and load figures; every method is safe to call concurrently."""

    def __init__(
        self, model_dir: str, model: ModelConfig, lora: LoraConfig, gpu_fraction: float = 0.0,
        record_dir: str | None = None, node_cache: str | None = None,
    ) -> None:  # fmt: skip
        capture_actor_output("policy")  # before the engine starts: its processes inherit the descriptors
        self._model = model
        self._lora = lora
        model_dir = str(fetch_dir(model_dir, node_cache))  # a model in storage: copied into this node's cache once
        self._engine = create_engine(model_dir, model, lora, gpu_fraction)
        self._registry = AdapterRegistry(lora.keep_versions)
        self._stats = ServerStats()
        self._load_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._started = False
        self._start_error: Exception | None = None  # a failed start fails every call the same way, never retried
        self._gauges = _Gauges()
        self._exporter: asyncio.Task[None] | None = None
        self._base_probe: dict[tuple[int, ...], list[float]] = {}  # the base never changes: score each probe once
        context = ray.get_runtime_context()
        self._node_cache = node_cache  # where adapters from an object store are downloaded (fieldkit.storage)
        # What this actor serves, kept across its restarts (the actor id survives them; a new server starts clean),
        # in run storage: a restart may land on another node.
        self._records = Storage(record_dir, node_cache) if record_dir else None
        self._record = f"serving-{context.get_actor_id()}.json"
        self._restarted = context.was_current_actor_reconstructed

    async def start(self) -> PolicyHealth:
        """Load and warm up the engine; returns health. Every other call waits for the same start."""
        await self._ready()
        return await self.health()

    async def _ready(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._start_error is not None:
                raise self._start_error
            try:
                await self._engine.start()
            except Exception as exc:
                self._start_error = exc
                raise
            self._exporter = asyncio.create_task(self._export_gauges())
            if self._restarted and self._records is not None and self._records.exists(self._record):
                refs = [AdapterRef.model_validate(ref) for ref in self._records.read_json(self._record).values()]
                for ref in refs:
                    await self._load_verified(ref)
                log.warning("policy server restarted: serving %s again", [f"{r.name} v{r.version}" for r in refs])
            self._started = True

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        await self._ready()
        prompt_ids, max_tokens = self._prompt(request)
        version = self._registry.acquire(request.adapter) if request.adapter else None
        self._stats.started()
        tokens = 0
        try:
            result = await self._engine.generate(prompt_ids, request, max_tokens, version.lora if version else None)
            tokens = len(result.token_ids)
        finally:
            self._stats.finished(tokens)
            if version:
                await self._release(version)
        return result.model_copy(
            update={"adapter": request.adapter, "adapter_version": version.info.version if version else BASE_VERSION}
        )

    async def generate_stream(self, request: GenerateRequest, window_s: float = 0.0) -> AsyncIterator[GenerateDelta]:
        """One reply as it is sampled, in pieces that join to what `generate` returns: the tokens sampled within
        `window_s` of each other travel as one (services.policy.stream). A Ray streaming generator on the actor, an
        async generator in a serve replica. A bad request raises what `generate` raises, before the first piece;
        closing or cancelling the stream stops the request in the engine and frees its place."""
        await self._ready()
        prompt_ids, max_tokens = self._prompt(request)
        version = self._registry.acquire(request.adapter) if request.adapter else None
        self._stats.started()
        tokens = 0
        finished = False
        try:
            engine_pieces = self._engine.stream(prompt_ids, request, max_tokens, version.lora if version else None)
            # closed here, not when collected: a stream closed while waiting at `yield` stops the engine at once
            async with contextlib.aclosing(coalesce(engine_pieces, window_s)) as pieces:
                async for piece in pieces:
                    tokens += len(piece.token_ids)
                    finished = piece.finish_reason is not None
                    yield piece
        except PolicyError:
            raise
        except Exception as exc:  # an engine's own exception may not survive pickling to the caller
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        finally:
            if not finished:
                self._stats.cancelled += 1
            self._stats.finished(tokens)
            if version:
                await self._release(version)

    def _prompt(self, request: GenerateRequest) -> tuple[list[int], int]:
        """The prompt's token ids (checked) and the tokens left for the reply."""
        if request.messages is not None:
            prompt_ids = render(
                self._engine.tokenizer, [m.model_dump() for m in request.messages], add_generation_prompt=True
            )
        else:
            prompt_ids = list(request.prompt_token_ids or [])
        self._check_ids(prompt_ids, "prompt_token_ids")
        self._check_room(len(prompt_ids), "the prompt")
        return prompt_ids, min(request.max_tokens, self._model.max_model_len - len(prompt_ids))

    async def score(
        self, prompt_ids: list[int], continuation_ids: list[int], adapter: str | None = None
    ) -> list[float]:
        """Teacher-forced log-probs of `continuation_ids` after `prompt_ids`, under `adapter`'s newest version."""
        await self._ready()
        if not prompt_ids or not continuation_ids:
            raise PolicyError(
                f"score needs tokens: prompt_ids has {len(prompt_ids)}, continuation_ids {len(continuation_ids)}"
            )
        self._check_ids(prompt_ids, "prompt_ids")
        self._check_ids(continuation_ids, "continuation_ids")
        self._check_room(len(prompt_ids) + len(continuation_ids), "prompt_ids + continuation_ids")
        version = self._registry.acquire(adapter) if adapter else None
        try:
            return await self._engine.score(list(prompt_ids), list(continuation_ids), version.lora if version else None)
        finally:
            if version:
                await self._release(version)

    async def load_adapter(self, ref: AdapterRef) -> LoadedAdapter:
        """Hot-load `ref` as its name's newest version, after its probe proves the engine serves the right weights."""
        await self._ready()
        info = await self._load_verified(ref)
        if self._records is not None:  # the adapters loaded last, one per name, as many as the engine holds at once
            served = self._records.read_json(self._record) if self._records.exists(self._record) else {}
            served.pop(ref.name, None)
            served[ref.name] = ref.model_dump(mode="json")  # dicts keep insertion order: the newest load is last
            self._records.write_json(self._record, dict(list(served.items())[-self._lora.max_loras :]))
        return info

    async def unload_adapter(self, name: str) -> None:
        """Stop serving every version of `name` (retention); requests in flight on one finish first. Unknown: no-op."""
        await self._ready()
        async with self._load_lock:
            for old in self._registry.remove(name):
                await self._engine.remove_lora(old.lora)
            if self._records is not None and self._records.exists(self._record):  # a restart must not load it again
                served = self._records.read_json(self._record)
                if served.pop(name, None) is not None:
                    self._records.write_json(self._record, served)

    async def _load_verified(self, ref: AdapterRef) -> LoadedAdapter:
        async with self._load_lock:
            self._registry.check_newer(ref)
            try:  # from run storage into this node's cache (a directory on a filesystem is read where it is)
                local = await asyncio.to_thread(fetch_dir, ref.path, self._node_cache)
            except StorageError as exc:
                raise AdapterRejectedError(f"adapter {ref.name} v{ref.version}: {exc}") from None
            stored, ref = ref, ref.model_copy(update={"path": str(local)})
            inspect_adapter_dir(ref, self._lora.max_lora_rank)
            if ref.probe is None and self._lora.require_probe:
                raise AdapterRejectedError(f"adapter {ref.name} v{ref.version} has no probe (lora.require_probe is on)")
            if ref.probe is not None:
                probe_ids = ref.probe.prompt_token_ids + ref.probe.continuation_token_ids
                self._check_ids(probe_ids, "probe token ids")
                self._check_room(len(probe_ids), "the probe")
            lora = self._registry.new_lora(ref)
            started = time.perf_counter()
            try:
                await self._engine.add_lora(lora)
            except Exception as exc:
                raise AdapterRejectedError(
                    f"adapter {ref.name} v{ref.version}: the engine could not load {ref.path}: {exc}"
                ) from None
            loaded = time.perf_counter()
            check = None
            if ref.probe is not None:
                probe = ref.probe
                try:
                    adapted = await self._engine.score(probe.prompt_token_ids, probe.continuation_token_ids, lora)
                    base = await self._base_logprobs(probe.prompt_token_ids, probe.continuation_token_ids)
                    tolerance = self._lora.resolved_probe_tolerance(self._engine.dtype)
                    check = check_probe(probe, adapted, base, tolerance)
                finally:
                    if check is None or not check.passed:
                        await self._engine.remove_lora(lora)
                if not check.passed:
                    raise AdapterRejectedError(
                        f"adapter {ref.name} v{ref.version} refused: the engine's probe log-probs differ from the "
                        f"learner's by {check.mean_abs_diff:.4f} nats/token on average (max {check.max_abs_diff:.4f}, "
                        f"lora.probe_tolerance {check.tolerance}); {self._still_serving(ref.name)}"
                    )
                if not check.distinguishable_from_base:
                    log.warning("adapter %s v%d: probe cannot tell it from the base model", ref.name, ref.version)
            info = LoadedAdapter(
                name=ref.name,
                version=ref.version,
                lora_id=lora.lora_id,
                path=stored.path,
                rank=ref.rank,
                probe=check,
                load_s=loaded - started,
                verify_s=time.perf_counter() - loaded,
            )
            for old in self._registry.add(ServingVersion(info, lora)):
                await self._engine.remove_lora(old.lora)
            self._gauges.adapter_version.set(ref.version, tags={"adapter": ref.name})
            return info

    async def adapters(self) -> list[LoadedAdapter]:
        await self._ready()
        return self._registry.loaded()

    async def health(self) -> PolicyHealth:
        await self._ready()
        error = None
        try:
            await self._engine.check_health()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return PolicyHealth(
            ok=error is None,
            engine=self._model.engine,
            model=self._engine.model_dir,
            dtype=self._engine.dtype,
            max_model_len=self._model.max_model_len,
            requests_in_flight=self._stats.in_flight,
            tokens_per_s=self._stats.tokens_per_s(),
            busy_fraction=self._stats.busy_fraction(),
            adapters=self._registry.newest(),
            engine_requests=self._engine.running_requests(),
            streams_cancelled=self._stats.cancelled,
            error=error,
        )

    async def shutdown(self) -> None:
        if self._exporter is not None:
            self._exporter.cancel()
        await self._engine.shutdown()

    def _check_ids(self, ids: list[int], field: str) -> None:
        vocab = self._engine.vocab_size
        outside = [t for t in ids if not 0 <= t < vocab]
        if outside:
            raise PolicyError(f"{field}: token id {outside[0]} is outside the vocabulary (0..{vocab - 1})")

    def _check_room(self, length: int, what: str) -> None:
        if length >= self._model.max_model_len:
            raise PromptTooLongError(
                f"{what} has {length} tokens; model.max_model_len={self._model.max_model_len} leaves no room "
                "for a generated token"
            )

    def _still_serving(self, name: str) -> str:
        newest = self._registry.newest().get(name)
        return f"v{newest} keeps serving" if newest is not None else f"no version of {name} is serving"

    async def _base_logprobs(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
        key = (*prompt_ids, -1, *continuation_ids)
        if key not in self._base_probe:
            self._base_probe[key] = await self._engine.score(prompt_ids, continuation_ids, None)
        return self._base_probe[key]

    async def _release(self, version: ServingVersion) -> None:
        for old in self._registry.release(version):
            await self._engine.remove_lora(old.lora)

    async def _export_gauges(self) -> None:
        # In flight and tokens/s duplicate vLLM's own ray_vllm_* figures on the vLLM engine; the page shows vLLM's,
        # but deploy/grafana's dashboard still reads these for every engine, so they stay until it moves over.
        while True:
            self._gauges.in_flight.set(self._stats.in_flight)
            self._gauges.tokens_per_s.set(self._stats.tokens_per_s())
            self._gauges.busy_fraction.set(self._stats.busy_fraction())
            await asyncio.sleep(GAUGE_PERIOD_S)


class _Gauges:
    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self.in_flight = Gauge("fieldkit_policy_requests_in_flight", description="generate calls in flight")
        self.tokens_per_s = Gauge("fieldkit_policy_tokens_per_s", description="generated tokens per second")
        self.busy_fraction = Gauge("fieldkit_policy_busy_fraction", description="share of time with requests")
        self.adapter_version = Gauge(
            "fieldkit_policy_adapter_version", description="newest serving version", tag_keys=("adapter",)
        )


@ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=-1)
class PolicyServer(Policy):
    """The policy as the Ray actor rollouts and the learner call (its resources: policy_options); named apart from
    Policy so that Ray, its dashboard and ours list it as PolicyServer."""


def policy_options(config: RunConfig) -> dict[str, Any]:
    """Ray options of the process that holds `config`'s policy engine (the PolicyServer actor, or a serve replica):
    one CPU, the GPU share, the engine's environment, the node placement."""
    gpu_fraction = config.resources.engine_gpu_fraction if config.resources.num_gpus > 0 else 0.0
    env = {**ENGINE_ENV, **{k: os.environ[k] for k in (ALLOW_BF16_LORA_ENV,) if k in os.environ}}
    return {
        "num_cpus": 1,
        "num_gpus": gpu_fraction,
        "runtime_env": {"env_vars": env},
        "resources": config.resources.placement.get("policy", {}),
    }


def start_policy_server(config: RunConfig, *, name: str | None = None) -> Any:
    """Create the PolicyServer actor for `config` (GPU share from resources), start its engine, return the handle."""
    from fieldkit.training.lora_model import resolve_model_path

    model_dir = resolve_model_path(config.model, config.paths.models_dir)
    options = policy_options(config)
    records = Storage(config.storage_root).uri(f"{config.run_name}/policy")
    server = PolicyServer.options(name=name, **options).remote(  # type: ignore[attr-defined]
        model_dir,
        config.model,
        config.lora,
        options["num_gpus"],
        records,
        config.paths.node_cache and str(config.paths.node_cache),
    )
    try:  # not retried: a start that failed fails again, and its error should come back now, once
        ray.get(server.start.options(max_task_retries=0).remote())
    except ray.exceptions.RayTaskError as exc:
        ray.kill(server)
        if isinstance(exc.cause, EngineStartError):
            raise exc.cause from None  # the clear message, without Ray's wrapping around it
        raise
    except ray.exceptions.RayActorError as exc:  # died, or unreachable because dying: not restarted to try again
        ray.kill(server)
        raise EngineStartError(
            f"the policy server's process died while starting its engine (model {model_dir}, dtype "
            f"{config.engine_dtype}; the OOM killer or a crash in native code, its log says which): {exc}"
        ) from None
    return server
