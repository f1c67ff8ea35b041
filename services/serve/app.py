"""The OpenAI-compatible Ray Serve application over the policy server.

Each replica of the ingress deployment holds one Policy in its own process (services.policy.server, the class the
PolicyServer actor of training rollouts runs): the same engine, adapter registry, probe verification and load
gauges, without a Ray call between the HTTP route and the engine. The replica takes the policy's resources (one
CPU, its GPU share, the engine's environment, its node: `policy_options`). The replica speaks the
OpenAI wire format (services.serve.schema / translate), checks the Bearer key, and maps the policy server's errors
to OpenAI's statuses. `model` is the base model's id or an adapter name; an adapter name serves its newest
verified version.

Streamed replies are relayed as the engine samples them (services.serve.stream), in chunks of the tokens sampled
within `serve.stream_window_s` of each other.

Publishing (POST /v1/adapters with the admin key, naming a run and version of run storage; or `publish_adapter`
from a driver) hot-loads a new version into every live replica through Serve's broadcast, each verifying the probe
in its own engine, then records the ref so replicas that start later serve it too. Nothing restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, SecretStr
from ray import serve

from fieldkit.chat_tokens import render
from fieldkit.config import RunConfig
from fieldkit.generation import (
    AdapterRejectedError,
    GenerateRequest,
    GenerateResult,
    LoadedAdapter,
    PolicyError,
    PolicyHealth,
    PromptTooLongError,
    UnknownAdapterError,
)
from fieldkit.storage import Storage, StorageError, fetch_dir
from fieldkit.training.records import AdapterRef
from services.serve import translate
from services.serve.adapters import (
    AdapterDirError,
    PublishedAdapters,
    RunAdapterError,
    run_adapter_label,
    run_adapter_ref,
    run_storage_labels,
    scrub_paths,
    with_probe,
)
from services.serve.errors import (
    OpenAIError,
    bad_request,
    cause_of,
    install_error_handlers,
    model_not_found,
    service_unavailable,
)
from services.serve.keys import check_admin, check_bearer
from services.serve.schema import ChatCompletionRequest, CompletionRequest, PublishRequest, TokenizeRequest
from services.serve.stream import ChoiceStream, open_streams, sse_response

log = logging.getLogger(__name__)

DEPLOYMENT = "OpenAIServer"
Authorization = Annotated[str | None, Header()]


class ServeSettings(BaseModel):
    """What every replica is built with."""

    model_config = ConfigDict(extra="forbid")
    config: RunConfig
    base_name: str
    adapters: list[AdapterRef]
    api_key: SecretStr | None  # inference routes; None only on a loopback host (services.serve.keys)
    admin_key: SecretStr | None  # POST /v1/adapters; None = publishing over HTTP is off
    published_dir: str


def _newest_per_name(refs: list[AdapterRef]) -> list[AdapterRef]:
    newest: dict[str, AdapterRef] = {}
    for ref in refs:
        if ref.name not in newest or ref.version > newest[ref.name].version:
            newest[ref.name] = ref
    return list(newest.values())


def local_model_dir(config: RunConfig) -> str:
    """The base model's files on this node (a model in storage fetched into its cache): the policy server may run
    on another node, where its own copy lives."""
    from fieldkit.training.lora_model import resolve_model_path

    return str(fetch_dir(resolve_model_path(config.model, config.paths.models_dir), config.paths.node_cache))


def _load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# Everything the deployment uses is defined above it: @serve.ingress pickles the routes when the class is decorated,
# and a replica sees only the module globals that existed then.
api = FastAPI(title="fieldkit OpenAI-compatible endpoint", docs_url=None, redoc_url=None)
install_error_handlers(api)


# max_constructor_retry_count=1: a replica whose start fails (an adapter the probe refuses, an engine that cannot
# start) fails the deployment with that error at once, instead of Serve starting a new engine 20 times over.
# Its ray_actor_options are the policy's (services.serve.launch.build_application).
@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=128, max_constructor_retry_count=1)
@serve.ingress(api)
class OpenAIServer:
    async def __init__(self, settings: ServeSettings) -> None:  # type: ignore[misc]  # Serve awaits it
        from fieldkit.training.lora_model import resolve_model_path
        from services.policy.server import Policy

        self._base = settings.base_name
        self._api_key = settings.api_key
        self._admin_key = settings.admin_key
        self._config = settings.config
        self._window_s = settings.config.serve.stream_window_s
        self._created = int(time.time())
        self._published = PublishedAdapters(Path(settings.published_dir))
        config = settings.config
        self._policy = Policy(
            resolve_model_path(config.model, config.paths.models_dir),
            config.model,
            config.lora,
            config.resources.engine_gpu_fraction if config.resources.num_gpus > 0 else 0.0,
            node_cache=config.paths.node_cache and str(config.paths.node_cache),
        )
        try:
            health = await self._policy.start()
            self._max_model_len = health.max_model_len
            self._engine = health.engine
            self._model_dir = await asyncio.to_thread(local_model_dir, config)  # for the tokenizer and probes
            self._tokenizer = await asyncio.to_thread(_load_tokenizer, self._model_dir)
            for ref in _newest_per_name([*settings.adapters, *self._published.refs()]):
                await self.load_adapter(ref)
        except BaseException:
            await self._policy.shutdown()  # a replica that fails to start leaves no engine behind
            raise

    # -- control plane (Serve handle methods) ------------------------------------------------------------------

    async def load_adapter(self, ref: AdapterRef) -> LoadedAdapter:
        """Hot-load `ref` into this replica's engine, verified by its probe."""
        if ref.name == self._base:
            raise AdapterRejectedError(f"adapter name {ref.name!r} is the base model's id; choose another name")
        try:
            return await self._policy.load_adapter(ref)
        except AdapterRejectedError as exc:
            raise AdapterRejectedError(str(cause_of(exc))) from None

    async def publish(self, ref: AdapterRef) -> list[LoadedAdapter]:
        """Hot-load `ref` into every live replica, then record it for replicas that start later."""
        context = serve.get_replica_context()
        handle = serve.get_deployment_handle(context.deployment, context.app_name)
        results = await handle.broadcast("load_adapter", ref).results_async(return_exceptions=True)
        failures = [cause_of(r) for r in results if isinstance(r, BaseException)]
        if failures:
            raise AdapterRejectedError(
                f"{len(failures)} of {len(results)} replicas refused {ref.name} v{ref.version}: {failures[0]}"
            )
        self._published.record(ref)
        return list(results)

    async def check_health(self) -> None:
        health = await self._policy.health()
        if not health.ok:
            raise RuntimeError(f"policy engine unhealthy: {health.error}")

    async def policy_health(self) -> PolicyHealth:
        """This replica's engine: requests running and cancelled, load figures, the newest version of each adapter."""
        return await self._policy.health()

    async def loaded_adapters(self) -> list[LoadedAdapter]:
        """Every adapter version this replica's engine serves, with its probe check."""
        return await self._policy.adapters()

    async def __del__(self) -> None:
        await self._policy.shutdown()

    # -- HTTP ----------------------------------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    async def list_models(self, authorization: Authorization = None) -> dict[str, Any]:
        self._authorize(authorization)
        return {"object": "list", "data": await self._model_cards()}

    @api.get("/v1/models/{model_id}")
    async def get_model(self, model_id: str, authorization: Authorization = None) -> dict[str, Any]:
        self._authorize(authorization)
        cards = await self._model_cards()
        for card in cards:
            if card["id"] == model_id:
                return card
        raise model_not_found(model_id, [c["id"] for c in cards])

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        self, body: ChatCompletionRequest, authorization: Authorization = None
    ) -> dict[str, Any] | StreamingResponse:
        self._authorize(authorization)
        requests = translate.chat_generate_requests(body, self._adapter(body.model), self._max_model_len)
        meta = self._meta("chatcmpl", body.model)
        if body.stream:
            streams = await self._open_streams(requests, body.model, "messages")
            choices = [s.pieces() for s in streams]
            chunks = translate.chat_stream(meta, self._tokenizer, choices, body.logprobs, body.include_usage)
            return sse_response(chunks, streams)
        results = await self._generate(requests, body.model, "messages")
        return translate.chat_completion(meta, self._tokenizer, results, body.logprobs)

    @api.post("/v1/completions", response_model=None)
    async def completions(
        self, body: CompletionRequest, authorization: Authorization = None
    ) -> dict[str, Any] | StreamingResponse:
        self._authorize(authorization)
        prompts = body.prompts()
        prompt_ids = [self._tokenizer(p)["input_ids"] if isinstance(p, str) else p for p in prompts]
        if any(not ids for ids in prompt_ids):
            raise bad_request("a prompt tokenises to no tokens", "prompt")
        texts = [p if isinstance(p, str) else self._tokenizer.decode(p) for p in prompts] if body.echo else []
        requests = translate.completion_generate_requests(body, prompt_ids, self._adapter(body.model))
        meta = self._meta("cmpl", body.model)
        logprobs = body.logprobs is not None
        if body.stream:
            streams = await self._open_streams(requests, body.model, "prompt")
            choices = [s.pieces() for s in streams]
            chunks = translate.text_stream(
                meta, self._tokenizer, choices, texts, body.n, body.echo, logprobs, body.include_usage
            )
            return sse_response(chunks, streams)
        results = await self._generate(requests, body.model, "prompt")
        return translate.text_completion(meta, self._tokenizer, results, texts, body.n, body.echo, logprobs)

    @api.post("/tokenize")
    async def tokenize(self, body: TokenizeRequest, authorization: Authorization = None) -> dict[str, Any]:
        self._authorize(authorization)
        if body.messages is not None:
            messages = [m.model_dump() for m in translate.chat_messages(body.messages)]
            tokens = render(self._tokenizer, messages, add_generation_prompt=body.add_generation_prompt)
        else:
            tokens = self._tokenizer(body.prompt, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {"count": len(tokens), "max_model_len": self._max_model_len, "tokens": tokens}

    @api.post("/v1/adapters")
    async def publish_route(self, body: PublishRequest, authorization: Authorization = None) -> dict[str, Any]:
        """Publish a run's adapter version (or its best) from run storage; the admin key only. Answers and errors
        name the run and version sent, never a path on this server."""
        check_admin(authorization, self._admin_key)
        label = run_adapter_label(body.run, body.version)
        hidden: dict[str, str] = {}
        try:  # run storage may be an object store: its calls block, so they run off the event loop
            storage = await asyncio.to_thread(Storage, self._config.storage_root, self._config.paths.node_cache)
            hidden = run_storage_labels(storage, body.run, body.version)
            ref = await asyncio.to_thread(run_adapter_ref, storage, body.run, body.version, body.name)
            if ref.probe is None and self._config.lora.require_probe:
                ref = await asyncio.to_thread(with_probe, ref, self._model_dir, self._config.paths.node_cache)
            loaded = await self.publish(ref)
        except RunAdapterError as exc:
            raise OpenAIError(404, str(exc), param="version", code="adapter_not_found") from None
        except (AdapterRejectedError, AdapterDirError) as exc:
            raise OpenAIError(422, scrub_paths(str(exc), hidden), param="version", code="adapter_rejected") from None
        except StorageError as exc:  # the object store's own words name buckets and keys: the log has them
            log.error("publishing %s failed: %s", label, exc)
            message = f"publishing {label} failed: run storage could not be read"
            raise OpenAIError(500, message, type_="server_error") from None
        except Exception as exc:
            log.error("publishing %s failed: %s", label, exc)
            message = f"publishing {label} failed: {type(exc).__name__}: {scrub_paths(str(exc), hidden)}"
            raise OpenAIError(500, message, type_="server_error") from None
        published = [{k: v for k, v in a.model_dump(mode="json").items() if k != "path"} for a in loaded]
        return {"object": "list", "run": body.run, "data": published}

    # -- helpers -------------------------------------------------------------------------------------------------

    def _authorize(self, authorization: str | None) -> None:
        check_bearer(authorization, self._api_key)

    def _adapter(self, model: str) -> str | None:
        return None if model == self._base else model

    def _meta(self, prefix: str, model: str) -> dict[str, Any]:
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": f"fieldkit-{self._engine}",
        }

    async def _model_cards(self) -> list[dict[str, Any]]:
        newest: dict[str, int] = {}
        for loaded in await self._policy.adapters():
            newest[loaded.name] = max(loaded.version, newest.get(loaded.name, -1))
        common = {"object": "model", "created": self._created, "owned_by": "fieldkit"}
        cards = [{"id": self._base, **common, "root": self._base, "parent": None, "max_model_len": self._max_model_len}]
        for name, version in sorted(newest.items()):
            cards.append(
                {
                    "id": name,
                    **common,
                    "root": self._base,
                    "parent": self._base,
                    "version": version,
                    "max_model_len": self._max_model_len,
                }
            )
        return cards

    async def _generate(self, requests: list[GenerateRequest], model: str, prompt_param: str) -> list[GenerateResult]:
        try:
            return list(await asyncio.gather(*(self._policy.generate(r) for r in requests)))
        except Exception as exc:
            raise await self._refusal(exc, model, prompt_param) from None

    async def _open_streams(self, requests: list[GenerateRequest], model: str, prompt_param: str) -> list[ChoiceStream]:
        """Every choice's stream, started at once, each with its first piece read (so a refusal is an error status)."""
        try:
            return await open_streams(self._policy, requests, self._window_s)
        except Exception as exc:
            raise await self._refusal(exc, model, prompt_param) from None

    async def _refusal(self, exc: Exception, model: str, prompt_param: str) -> OpenAIError:
        """The OpenAI error for what the policy server raised."""
        if isinstance(exc, UnknownAdapterError):
            return model_not_found(model, [c["id"] for c in await self._model_cards()])
        if isinstance(exc, PromptTooLongError):
            return bad_request(
                f"This model's maximum context length is {self._max_model_len} tokens: {cause_of(exc)}",
                prompt_param,
                "context_length_exceeded",
            )
        if isinstance(exc, PolicyError):
            return bad_request(str(cause_of(exc)), prompt_param)
        log.error("generation failed: %s", cause_of(exc))
        return service_unavailable(f"the policy engine failed: {type(cause_of(exc)).__name__}")
