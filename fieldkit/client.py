"""An OpenAI-compatible chat client (httpx) for any endpoint: vLLM, the project's Serve app, a hosted API.

What it adds over a bare POST:
- Retries with exponential backoff on what is transient (429, 502, 503, 504, timeouts, refused connections),
  honouring Retry-After; never on any other 4xx, so a bad request fails at once with the server's message.
- A context-size guard: the prompt is counted before it is sent (exactly with vLLM's /tokenize, else estimated from
  its bytes), refused with ContextLengthError when it cannot fit, and max_tokens is cut to what is left.
- Structured output: `json_schema=` asks for schema-constrained JSON through the standard `response_format`
  (vLLM turns it into guided decoding), and `chat_json` parses the reply.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})
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
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        context_limit: int | None = None,
        min_completion_tokens: int = 16,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.context_limit = context_limit
        self.min_completion_tokens = min_completion_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)
        self._can_tokenize: bool | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport with retries -------------------------------------------------------------------------------

    def _request(self, method: str, url: str, payload: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
        """JSON response and the number of attempts it took; retries transient failures with backoff."""
        last = "no attempt made"
        for attempt in range(1, self.max_retries + 2):
            retry_after: float | None = None
            try:
                response = self._http.request(method, url, json=payload)
            except (httpx.TimeoutException, httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response.json(), attempt
                message = _error_message(response)
                if response.status_code not in RETRY_STATUSES:
                    kind = ContextLengthError if _is_context_error(message) else ChatError
                    raise kind(f"{method} {url} -> {response.status_code}: {message}", response.status_code, attempt)
                last = f"HTTP {response.status_code}: {message}"
                retry_after = _retry_after(response)
            if attempt > self.max_retries:
                break
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            time.sleep(min(self.max_backoff_s, retry_after) if retry_after is not None else delay)
        raise ChatError(f"{method} {url} failed after {self.max_retries + 1} attempts: {last}", None, attempt)

    # -- discovery --------------------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        data, _ = self._request("GET", f"{self.base_url}/models")
        return list(data.get("data", []))

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
        """Exact count through vLLM's /tokenize when the server has it; else a conservative estimate."""
        if self._can_tokenize is not False:
            root = self.base_url.removesuffix("/v1")
            try:
                data, _ = self._request(
                    "POST", f"{root}/tokenize", {"model": self.resolve_model(), "messages": messages}
                )
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
    ) -> ChatReply:
        payload: dict[str, Any] = {
            "model": self.resolve_model(),
            "messages": messages,
            "max_tokens": self.fit_max_tokens(messages, max_tokens),
            "temperature": temperature,
        }
        if seed is not None:
            payload["seed"] = seed
        if json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": json_schema, "strict": True},
            }
        data, attempts = self._request("POST", f"{self.base_url}/chat/completions", payload)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return ChatReply(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            model=data.get("model", payload["model"]),
            attempts=attempts,
            raw=data,
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


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message", error))[:500]
    return str(error)[:500]


def _is_context_error(message: str) -> bool:
    lowered = message.lower()
    return "context length" in lowered or "maximum context" in lowered or "too long" in lowered


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
