"""The OpenAI-compatible Ray Serve application over the policy server.

Each replica of the ingress deployment owns one PolicyServer actor (services.policy): the engine, adapter registry,
probe verification and load gauges that serve training rollouts serve users here too. The replica speaks the
OpenAI wire format (services.serve.schema / translate), checks the Bearer key, and maps the policy server's errors
to OpenAI's statuses. `model` is the base model's id or an adapter name; an adapter name serves its newest
verified version.

Publishing (POST /v1/adapters, or `publish_adapter` from a driver) hot-loads a new version into every live replica
through Serve's broadcast, each verifying the probe in its own engine, then records the ref so replicas that start
later serve it too. Nothing restarts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from ray import serve

from fieldkit.chat_tokens import render
from fieldkit.config import RunConfig
from fieldkit.generation import (
    AdapterRejectedError,
    GenerateRequest,
    GenerateResult,
    LoadedAdapter,
    PolicyError,
    PromptTooLongError,
    UnknownAdapterError,
)
from fieldkit.training.records import AdapterRef
from services.serve import translate
from services.serve.adapters import PublishedAdapters
from services.serve.errors import (
    OpenAIError,
    bad_request,
    install_error_handlers,
    model_not_found,
    service_unavailable,
    unauthorized,
)
from services.serve.schema import ChatCompletionRequest, CompletionRequest, TokenizeRequest

log = logging.getLogger(__name__)

DEPLOYMENT = "OpenAIServer"
# Each replica's PolicyServer is named after its app and replica, so the dashboard shows which is which and a
# benchmark can reach the engine behind the HTTP layer.
POLICY_ACTOR_PREFIX = "fieldkit-serve-policy:"
Authorization = Annotated[str | None, Header()]


class ServeSettings(BaseModel):
    """What every replica is built with."""

    model_config = ConfigDict(extra="forbid")
    config: RunConfig
    base_name: str
    adapters: list[AdapterRef]
    api_key: str | None
    published_dir: str


def cause_of(exc: BaseException) -> BaseException:
    """The original exception inside Ray's task-error wrappers (their str() carries a whole traceback)."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:  # type: ignore[attr-defined]
        exc = exc.cause  # type: ignore[attr-defined]
    return exc


def _sse(chunks: Iterator[dict[str, Any]]) -> Response:
    """Server-sent events, one per chunk, ending with [DONE]. The reply is complete before the first event (the
    policy server returns whole generations), so the events go out as one ordinary response body: a streamed
    response crosses Serve's proxy as a message per write, which made 50 concurrent streams 2-6x slower."""
    events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return Response(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _newest_per_name(refs: list[AdapterRef]) -> list[AdapterRef]:
    newest: dict[str, AdapterRef] = {}
    for ref in refs:
        if ref.name not in newest or ref.version > newest[ref.name].version:
            newest[ref.name] = ref
    return list(newest.values())


def _load_tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# Everything the deployment uses is defined above it: @serve.ingress pickles the routes when the class is decorated,
# and a replica sees only the module globals that existed then.
api = FastAPI(title="fieldkit OpenAI-compatible endpoint", docs_url=None, redoc_url=None)
install_error_handlers(api)


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class OpenAIServer:
    async def __init__(self, settings: ServeSettings) -> None:  # type: ignore[misc]  # Serve awaits it
        from services.policy import start_policy_server

        self._base = settings.base_name
        self._api_key = settings.api_key
        self._created = int(time.time())
        self._published = PublishedAdapters(Path(settings.published_dir))
        context = serve.get_replica_context()
        name = f"{POLICY_ACTOR_PREFIX}{context.app_name}:{context.replica_id.unique_id}"
        self._policy = await asyncio.to_thread(start_policy_server, settings.config, name=name)
        health = await self._policy.health.remote()
        self._max_model_len = health.max_model_len
        self._engine = health.engine
        self._tokenizer = await asyncio.to_thread(_load_tokenizer, health.model)
        for ref in _newest_per_name([*settings.adapters, *self._published.refs()]):
            await self.load_adapter(ref)

    # -- control plane (Serve handle methods) ------------------------------------------------------------------

    async def load_adapter(self, ref: AdapterRef) -> LoadedAdapter:
        """Hot-load `ref` into this replica's engine, verified by its probe."""
        if ref.name == self._base:
            raise AdapterRejectedError(f"adapter name {ref.name!r} is the base model's id; choose another name")
        try:
            return await self._policy.load_adapter.remote(ref)
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
        health = await self._policy.health.remote()
        if not health.ok:
            raise RuntimeError(f"policy engine unhealthy: {health.error}")

    async def __del__(self) -> None:
        await self._policy.shutdown.remote()

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
    ) -> dict[str, Any] | Response:
        self._authorize(authorization)
        requests = translate.chat_generate_requests(body, self._adapter(body.model), self._max_model_len)
        results = await self._generate(requests, body.model, "messages")
        meta = self._meta("chatcmpl", body.model)
        if body.stream:
            return _sse(translate.chat_chunks(meta, self._tokenizer, results, body.logprobs, body.include_usage))
        return translate.chat_completion(meta, self._tokenizer, results, body.logprobs)

    @api.post("/v1/completions", response_model=None)
    async def completions(
        self, body: CompletionRequest, authorization: Authorization = None
    ) -> dict[str, Any] | Response:
        self._authorize(authorization)
        prompts = body.prompts()
        prompt_ids = [self._tokenizer(p)["input_ids"] if isinstance(p, str) else p for p in prompts]
        if any(not ids for ids in prompt_ids):
            raise bad_request("a prompt tokenises to no tokens", "prompt")
        texts = [p if isinstance(p, str) else self._tokenizer.decode(p) for p in prompts] if body.echo else []
        requests = translate.completion_generate_requests(body, prompt_ids, self._adapter(body.model))
        results = await self._generate(requests, body.model, "prompt")
        meta = self._meta("cmpl", body.model)
        logprobs = body.logprobs is not None
        if body.stream:
            chunks = translate.text_chunks(
                meta, self._tokenizer, results, texts, body.n, body.echo, logprobs, body.include_usage
            )
            return _sse(chunks)
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
    async def publish_route(self, ref: AdapterRef, authorization: Authorization = None) -> dict[str, Any]:
        self._authorize(authorization)
        try:
            loaded = await self.publish(ref)
        except AdapterRejectedError as exc:
            raise OpenAIError(422, str(exc), param="probe", code="adapter_rejected") from None
        return {"object": "list", "data": [a.model_dump(mode="json") for a in loaded]}

    # -- helpers -------------------------------------------------------------------------------------------------

    def _authorize(self, authorization: str | None) -> None:
        if not self._api_key:
            return
        if not authorization:
            raise unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self._api_key.encode()):
            raise unauthorized("Incorrect API key provided")

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
        for loaded in await self._policy.adapters.remote():
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
            return list(await asyncio.gather(*(self._policy.generate.remote(r) for r in requests)))
        except UnknownAdapterError:
            raise model_not_found(model, [c["id"] for c in await self._model_cards()]) from None
        except PromptTooLongError as exc:
            raise bad_request(
                f"This model's maximum context length is {self._max_model_len} tokens: {cause_of(exc)}",
                prompt_param,
                "context_length_exceeded",
            ) from None
        except PolicyError as exc:
            raise bad_request(str(cause_of(exc)), prompt_param) from None
        except Exception as exc:
            log.exception("generation failed")
            raise service_unavailable(f"the policy engine failed: {type(cause_of(exc)).__name__}") from None
