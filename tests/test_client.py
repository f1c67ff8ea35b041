"""fieldkit.client over real HTTP: the openai SDK's retries and backoff as the client reports them, no retry on
400, the context guard, structured JSON.

The faults (429, 503, a stalled server) come from a scripted local HTTP server: a real vLLM server does not return
them on demand. The same client against the real vLLM CPU engine is tested in test_gym_synth.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fieldkit.client import ChatClient, ChatError, ContextLengthError, StructuredOutputError

OK = {
    "model": "m",
    "choices": [{"message": {"role": "assistant", "content": '{"a": 1}'}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
}
MODELS = {"data": [{"id": "m", "max_model_len": 100}]}


class ScriptedServer:
    """Answers each POST /v1/chat/completions with the next scripted (status, body, headers, delay); records them."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict, dict, float]] = []
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.requests.append(("GET " + self.path, {}))
                self._send(200, MODELS)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                server.requests.append(("POST " + self.path, body))
                if self.path == "/tokenize":
                    self._send(404, {"detail": "Not Found"})
                    return
                status, reply, headers, delay = server.script.pop(0) if server.script else (200, OK, {}, 0.0)
                time.sleep(delay)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self._send(status, reply, headers)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def chats(self) -> list[dict]:
        return [body for path, body in self.requests if path == "POST /v1/chat/completions"]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def client_for(server: ScriptedServer, **kwargs) -> ChatClient:
    return ChatClient(server.url, "m", **kwargs)


MESSAGES = [{"role": "user", "content": "hi"}]


def test_429_and_503_are_retried_until_the_server_answers(server) -> None:
    server.script = [
        (429, {"error": {"message": "rate limited"}}, {}, 0.0),
        (503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"}, 0.0),
    ]
    with client_for(server) as client:
        reply = client.chat(MESSAGES, max_tokens=10)
    assert (reply.text, reply.finish_reason, reply.attempts) == ('{"a": 1}', "stop", 3)
    assert len(server.chats()) == 3


def test_a_400_is_never_retried(server) -> None:
    server.script = [(400, {"error": {"message": "temperature must be >= 0"}}, {}, 0.0)]
    with client_for(server) as client, pytest.raises(ChatError, match="400: temperature must be >= 0") as err:
        client.chat(MESSAGES, max_tokens=10)
    assert (err.value.status, err.value.attempts) == (400, 1)
    assert len(server.chats()) == 1


def test_a_context_overflow_reported_by_the_server_is_a_context_error(server) -> None:
    message = "This model's maximum context length is 100 tokens. However, you requested 180 tokens."
    server.script = [(400, {"error": {"message": message}}, {}, 0.0)]
    with client_for(server) as client, pytest.raises(ContextLengthError, match="maximum context length"):
        client.chat(MESSAGES, max_tokens=10)
    assert len(server.chats()) == 1


def test_timeouts_are_retried_then_reported(server) -> None:
    server.script = [(200, OK, {}, 1.0)] * 3
    with (
        client_for(server, timeout_s=0.2, max_retries=2) as client,
        pytest.raises(ChatError, match="3 attempts") as err,
    ):
        client.chat(MESSAGES, max_tokens=10)
    assert "ReadTimeout" in str(err.value) and err.value.attempts == 3


def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1)
    with pytest.raises(ChatError, match="ConnectError") as err:
        client.chat(MESSAGES, max_tokens=10)
    assert err.value.attempts == 2


def test_context_guard_refuses_or_trims_before_sending(server) -> None:
    with client_for(server) as client:  # the server reports max_model_len 100 and has no /tokenize
        assert client.context_window() == 100
        with pytest.raises(ContextLengthError, match="leaves"):
            client.chat([{"role": "user", "content": "x" * 400}], max_tokens=10)
        assert server.chats() == []  # refused before anything was sent
        client.chat([{"role": "user", "content": "y" * 150}], max_tokens=500)
    assert server.chats()[0]["max_tokens"] == 100 - (50 + 8)  # trimmed to the room left after the prompt


def test_json_schema_goes_out_as_response_format_and_comes_back_parsed(server) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with client_for(server) as client:
        assert client.chat_json(MESSAGES, schema, schema_name="thing", max_tokens=10) == {"a": 1}
        sent = server.chats()[0]["response_format"]
        assert sent == {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
        cut = {**OK, "choices": [{"message": {"content": '{"a": '}, "finish_reason": "length"}]}
        server.script = [(200, cut, {}, 0.0)]
        with pytest.raises(StructuredOutputError, match="finish_reason length") as err:
            client.chat_json(MESSAGES, schema, max_tokens=10)
    assert err.value.text == '{"a": '
