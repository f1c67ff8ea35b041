"""An OpenAI-compatible chat client for any endpoint (vLLM, `fieldkit serve`, a hosted API), on the official `openai`
SDK: the SDK retries what is transient (refused connections, timeouts, 408, 409, 429, 5xx) with exponential backoff
and jitter, honouring Retry-After, and never retries any other 4xx, so a bad request fails at once with the server's
message. What this module adds:
- A context-size guard: the prompt is counted before it is sent (exactly with vLLM's /tokenize, else estimated from
  its bytes), refused with ContextLengthError when it cannot fit, and max_tokens is cut to what is left.
- Structured output: `json_schema=` asks for schema-constrained JSON through the standard `response_format`
  (vLLM turns it into guided decoding), and `chat_json` parses the reply.
- One error type, ChatError, with the status and how many attempts were made.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import openai

BYTES_PER_TOKEN_ESTIMATE = 3  # conservative for BPE on English/code; used only where the server cannot count
TOKENS_PER_MESSAGE = 8  # chat-template overhead per message in the estimate


class ChatError(RuntimeError):
    """The request failed for good: a non-retryable status, or retries ran out."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ContextLengthError(ChatError):
    """The prompt (plus the minimum completion) does not fit the model's context window."""


class StructuredOutputError(ChatError):
    """The reply was not the JSON that was asked for (cut off, or not JSON at all)."""

    def __init__(self, message: str, text: str, finish_reason: str | None) -> None:
        super().__init__(message)
        self.text = text
        self.finish_reason = finish_reason


@dataclass
class ChatReply:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str
    attempts: int = 1
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        context_limit: int | None = None,
        min_completion_tokens: int = 16,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.context_limit = context_limit
        self.min_completion_tokens = min_completion_tokens
        self._attempts = 0  # requests sent for the current call, retries included (an httpx hook counts them)
        http = openai.DefaultHttpxClient(timeout=timeout_s, event_hooks={"request": [self._count]})
        self._openai = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or "none",  # the SDK insists on one; servers without keys ignore it
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http,
        )
        self._can_tokenize: bool | None = None

    def close(self) -> None:
        self._openai.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _count(self, _: object) -> None:
        self._attempts += 1

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """fn's result and the attempts it took; the SDK's errors as ChatError naming `what`, status and cause."""
        self._attempts = 0
        try:
            return fn(*args, **kwargs), self._attempts
        except openai.APIStatusError as exc:
            message = _error_message(exc)
            kind = ContextLengthError if exc.status_code == 400 and _is_context_error(message) else ChatError
            raise kind(f"{what} -> {exc.status_code}: {message}", exc.status_code, self._attempts) from None
        except openai.APIConnectionError as exc:  # timeouts included: the SDK retried them already
            cause = exc.__cause__ or exc
            raise ChatError(
                f"{what} failed after {self._attempts} attempts: {type(cause).__name__}: {cause}", None, self._attempts
            ) from None

    # -- discovery --------------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        page, _ = self._call("GET /models", self._openai.models.list)
        return [m.model_dump() for m in page.data]

    def resolve_model(self) -> str:
        if self.model is None:
            served = self.models()
            if not served:
                raise ChatError(f"{self.base_url} serves no models")
            self.model = str(served[0]["id"])
        return self.model

    def context_window(self) -> int | None:
        """The configured limit, else what the server reports (vLLM's `max_model_len`), else None (unknown)."""
        if self.context_limit is None:
            model = self.resolve_model()
            for entry in self.models():
                if entry.get("id") == model and isinstance(entry.get("max_model_len"), int):
                    self.context_limit = entry["max_model_len"]
        return self.context_limit

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact count through vLLM's /tokenize (beside /v1) when the server has it; else a conservative estimate."""
        if self._can_tokenize is not False:
            root = self._openai.with_options(base_url=self.base_url.removesuffix("/v1"))
            body = {"model": self.resolve_model(), "messages": messages}
            try:
                data, _ = self._call("POST /tokenize", root.post, "/tokenize", body=body, cast_to=object)
                self._can_tokenize = True
                return int(data["count"])
            except ChatError as exc:
                if exc.status not in (404, 405):
                    raise
                self._can_tokenize = False
        return sum(
            math.ceil(len(m.get("content", "").encode()) / BYTES_PER_TOKEN_ESTIMATE) + TOKENS_PER_MESSAGE
            for m in messages
        )

    def fit_max_tokens(self, messages: list[dict[str, str]], max_tokens: int) -> int:
        """The completion budget left after the prompt; ContextLengthError when not even the minimum fits."""
        window = self.context_window()
        if window is None:
            return max_tokens
        prompt = self.count_prompt_tokens(messages)
        room = window - prompt
        if room < min(self.min_completion_tokens, max_tokens):
            raise ContextLengthError(
                f"prompt of {prompt} tokens leaves {room} of the {window}-token context "
                f"(need at least {min(self.min_completion_tokens, max_tokens)} for the reply)"
            )
        return min(max_tokens, room)

    # -- chat ------------------------------------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = None,
        json_schema: dict[str, Any] | None = None,
        schema_name: str = "reply",
        top_logprobs: int | None = None,
    ) -> ChatReply:
        """`top_logprobs`: also return each reply token's most likely alternatives (in `raw`, as the API gives them),
        which an LLM judge reads its score from."""
        model = self.resolve_model()
        extra: dict[str, Any] = {}
        if seed is not None:
            extra["seed"] = seed
        if top_logprobs is not None:
            extra["logprobs"] = True
            extra["top_logprobs"] = top_logprobs
        if json_schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            }
        reply, attempts = self._call(
            "POST /chat/completions",
            self._openai.chat.completions.create,
            model=model,
            messages=messages,  # type: ignore[arg-type]  # plain role/content dicts
            max_tokens=self.fit_max_tokens(messages, max_tokens),
            temperature=temperature,
            **extra,
        )
        choice = reply.choices[0]
        usage = reply.usage
        return ChatReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            model=reply.model or model,
            attempts=attempts,
            raw=reply.model_dump(),
        )

    def chat_json(self, messages: list[dict[str, str]], json_schema: dict[str, Any], **kwargs: Any) -> Any:
        """Ask for schema-constrained JSON and parse it; StructuredOutputError when the reply is not JSON."""
        reply = self.chat(messages, json_schema=json_schema, **kwargs)
        try:
            return json.loads(reply.text)
        except json.JSONDecodeError as exc:
            raise StructuredOutputError(
                f"reply is not JSON ({exc.msg} at {exc.pos}; finish_reason {reply.finish_reason})",
                reply.text,
                reply.finish_reason,
            ) from exc


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error if error is not None else exc.response.text)[:500]


def _is_context_error(message: str) -> bool:
    lowered = message.lower()
    return "context length" in lowered or "maximum context" in lowered or "too long" in lowered
