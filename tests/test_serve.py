"""The OpenAI-compatible endpoint, end to end: the official `openai` client against the real Serve application on
the tiny model.

One Ray cluster and one Serve application for the module, started through `start_endpoint` (what `fieldkit serve`
runs), on the vLLM CPU engine: the engine users get by default, and the one that batches concurrent requests.
It starts reliably under Serve here (the replica's PolicyServer actor is the one the policy tests run) but costs
1-3 minutes on 2 busy cores, so everything shares it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import free_port

from fieldkit.config import RunConfig
from fieldkit.generation import AdapterRejectedError
from fieldkit.training.records import AdapterRef

pytestmark = [pytest.mark.engine, pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-7f3a"
ADMIN_KEY = "admin-key-2c9e"
MAX_MODEL_LEN = 512
MESSAGES = [{"role": "user", "content": "List the files in the workspace."}]


def write_adapter(model_dir: Path, out: Path, name: str, version: int, seed: int) -> AdapterRef:
    """A seeded random adapter with its ref file beside it, as a training run leaves runs/<run>/best."""
    from fieldkit.training.random_adapter import build_random_adapter
    from services.serve.adapters import REF_FILE

    ref = build_random_adapter(model_dir, out, name=name, version=version, seed=seed)
    (out / REF_FILE).write_text(ref.model_dump_json())
    return ref


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    import ray
    from ray import serve

    from services.serve import AdapterSource, start_endpoint

    root = tmp_path_factory.mktemp("serve")
    write_adapter(tiny_model_dir, root / "run-a" / "best", "agent", 1, seed=1)
    config = RunConfig.model_validate(
        {
            "model": {"engine": "vllm", "max_model_len": MAX_MODEL_LEN},
            "paths": {"models_dir": str(REPO / "runs" / "models"), "runs_dir": str(root / "runs")},
            "serve": {"port": free_port(), "api_key": API_KEY, "admin_key": ADMIN_KEY, "app_name": "fieldkit-test"},
        }
    )
    ray.init(address="local", num_cpus=4, include_dashboard=False)  # never a `ray start` cluster
    try:
        info = start_endpoint(config, [AdapterSource(root / "run-a" / "best")])
        yield {"info": info, "config": config, "root": root, "model_dir": tiny_model_dir}
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def client(endpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint["info"].base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_models_lists_the_base_and_the_adapter(endpoint, client: openai.OpenAI) -> None:
    assert endpoint["info"].models == ["tiny", "agent"]
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "agent"}
    agent = client.models.retrieve("agent")
    assert agent.model_extra["parent"] == "tiny"
    assert agent.model_extra["version"] == 1
    assert models["tiny"].model_extra["max_model_len"] == MAX_MODEL_LEN


def test_haproxy_serves_the_port_in_front_of_the_replica(endpoint) -> None:
    """Serve's high-throughput mode is on (services.serve.launch.SERVE_ENV): HAProxy, not Serve's Python proxy,
    listens on serve.port and forwards each request to the replica's own HTTP server."""
    import psutil

    port = endpoint["config"].serve.port
    listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and {psutil.Process(c.pid).name() for c in listening} == {"haproxy"}


def test_chat_answers_with_usage_counted_in_tokens(client: openai.OpenAI, tokenizer) -> None:
    from fieldkit.chat_tokens import render

    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, seed=3)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == len(render(tokenizer, MESSAGES, add_generation_prompt=True))
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_joins_to_the_non_streamed_reply(client: openai.OpenAI) -> None:
    kwargs = {"model": "agent", "messages": MESSAGES, "max_tokens": 16, "temperature": 0.0, "seed": 5}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}, logprobs=True)
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert "".join(pieces) == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(streamed) == whole.usage.completion_tokens  # every token's log-prob, in whichever chunk it came


def test_a_streamed_reply_arrives_as_it_is_generated(client: openai.OpenAI) -> None:
    """64 tokens come in many chunks (tokens of one ~20 ms window share one), the first long before the last."""
    kwargs = {"model": "tiny", "prompt": [1, 5, 9], "max_tokens": 64, "temperature": 1.0, "seed": 11}
    for _ in range(2):  # the second run is the measured one: the first may pay a cold path
        started = time.perf_counter()
        arrivals = []
        tokens = 0
        for chunk in client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].text:
                arrivals.append(time.perf_counter() - started)
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        total = time.perf_counter() - started
    assert tokens == 64, "the seeded reply must run to max_tokens for this test to measure anything"
    print(f"\n64-token stream: {len(arrivals)} chunks, first {arrivals[0]:.3f} s of {total:.3f} s")
    assert len(arrivals) >= 8
    assert arrivals[0] < total / 2


def first_token_distribution(client: openai.OpenAI, model: str) -> dict[str, float]:
    reply = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5
    )
    assert reply.model == model
    return {t.token + repr(t.bytes): t.logprob for t in reply.choices[0].logprobs.content[0].top_logprobs}


def test_model_field_chooses_the_adapter(client: openai.OpenAI) -> None:
    base = first_token_distribution(client, "tiny")
    adapted = first_token_distribution(client, "agent")
    assert base != adapted
    assert first_token_distribution(client, "agent") == pytest.approx(adapted, abs=1e-4)  # and it is repeatable


def test_text_completions_with_text_and_token_prompts(client: openai.OpenAI, tokenizer) -> None:
    prompt = "ls -la && cat notes.md"
    ids = tokenizer(prompt)["input_ids"]
    kwargs = {"model": "agent", "max_tokens": 6, "temperature": 0.0}
    by_text = client.completions.create(prompt=prompt, echo=True, logprobs=2, **kwargs)
    by_ids = client.completions.create(prompt=ids, **kwargs)
    text = by_text.choices[0].text
    assert text.startswith(prompt) and text.removeprefix(prompt) == by_ids.choices[0].text
    assert len(by_text.choices[0].logprobs.token_logprobs) == by_text.usage.completion_tokens
    assert by_text.usage.prompt_tokens == len(ids)
    batch = client.completions.create(prompt=["one", "two"], n=2, seed=1, max_tokens=3, model="tiny")
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    streamed = client.completions.create(prompt=ids, stream=True, **kwargs)
    assert "".join(c.choices[0].text for c in streamed) == by_ids.choices[0].text


def test_tokenize_counts_like_the_chat_template(endpoint, tokenizer) -> None:
    from fieldkit.chat_tokens import render
    from fieldkit.client import ChatClient

    with ChatClient(endpoint["info"].base_url, "agent", api_key=API_KEY) as chat:
        assert chat.context_window() == MAX_MODEL_LEN
        assert chat.count_prompt_tokens(MESSAGES) == len(render(tokenizer, MESSAGES, add_generation_prompt=True))


def test_unknown_model_is_a_404_naming_what_is_served(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-agent", messages=MESSAGES, max_tokens=4)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "no-such-agent" in error["message"] and "agent" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-agent")


def post(endpoint, path: str, content: bytes | str, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(endpoint["info"].base_url + path, content=content, headers=headers, timeout=120)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ('{"model": "tiny", "messages": [', None, "not valid JSON"),
        ('{"model": "tiny"}', "messages", "missing"),
        ('{"model": "tiny", "messages": "hi"}', "messages", "valid list"),
        ('{"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role", "robot"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 7}', "temperature", "7"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "bogus": 1}', "bogus", "Unrecognized"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}', "tools", "tool"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": [""]}', "stop", "non-empty"),
    ],
)
def test_malformed_chat_bodies_are_400_naming_the_field(endpoint, body: str, param: str | None, says: str) -> None:
    response = post(endpoint, "/chat/completions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"]


def test_prompt_beyond_the_context_is_400_context_length(client: openai.OpenAI) -> None:
    long_text = "word " * (MAX_MODEL_LEN * 2)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long_text}])
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "maximum context length" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="")


def test_missing_or_wrong_key_is_401(endpoint) -> None:
    url = endpoint["info"].base_url
    body = json.dumps({"model": "tiny", "messages": MESSAGES, "max_tokens": 2})
    missing = post(endpoint, "/chat/completions", body, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # probes need no key


def test_publish_hot_loads_a_verified_version_without_restart(endpoint, client: openai.OpenAI) -> None:
    from services.serve import publish_adapter
    from services.serve.adapters import PublishedAdapters
    from services.serve.launch import published_dir

    before = first_token_distribution(client, "agent")
    v2 = write_adapter(endpoint["model_dir"], endpoint["root"] / "run-a" / "v2", "agent", 2, seed=2)
    loaded = publish_adapter(v2, app_name="fieldkit-test")
    assert [(a.name, a.version) for a in loaded] == [("agent", 2)] and loaded[0].probe.passed
    assert client.models.retrieve("agent").model_extra["version"] == 2
    assert first_token_distribution(client, "agent") != before
    assert [(r.name, r.version) for r in PublishedAdapters(published_dir(endpoint["config"])).refs()] == [("agent", 2)]

    with pytest.raises(AdapterRejectedError, match="not newer"):
        publish_adapter(v2, app_name="fieldkit-test")
    assert client.models.retrieve("agent").model_extra["version"] == 2


def test_publishing_over_http_takes_the_admin_key_and_run_storage_only(endpoint, client: openai.OpenAI) -> None:
    runs = Path(endpoint["config"].paths.runs_dir)
    v3 = write_adapter(endpoint["model_dir"], runs / "run-a" / "adapters" / "run-a-v3", "agent", 3, seed=3)
    body = json.dumps({"run": "run-a", "version": 3, "name": "agent"})
    assert post(endpoint, "/adapters", body).status_code == 401  # the inference key cannot publish
    assert post(endpoint, "/adapters", body, key=None).status_code == 401

    arbitrary = post(endpoint, "/adapters", json.dumps({"run": "run-a", "version": 3, "path": v3.path}), ADMIN_KEY)
    assert arbitrary.status_code == 400 and "Unrecognized request argument supplied: path" in arbitrary.text
    escape = post(endpoint, "/adapters", json.dumps({"run": "../run-a", "version": 3}), ADMIN_KEY)
    assert escape.status_code == 400 and escape.json()["error"]["param"] == "run"
    missing = post(endpoint, "/adapters", json.dumps({"run": "run-a", "version": 9}), ADMIN_KEY)
    assert missing.status_code == 404 and "run 'run-a' version 9" in missing.text and "versions: 3" in missing.text

    probe = v3.probe.model_copy(update={"logprobs": [lp - 1.0 for lp in v3.probe.logprobs]})
    tampered_dir = runs / "run-a" / "adapters" / "run-a-v4"  # weights of v3, a probe they do not give
    write_adapter(endpoint["model_dir"], tampered_dir, "agent", 4, seed=3)
    (tampered_dir / "adapter_ref.json").write_text(
        v3.model_copy(update={"version": 4, "probe": probe}).model_dump_json()
    )
    refused = post(endpoint, "/adapters", json.dumps({"run": "run-a", "version": 4, "name": "agent"}), ADMIN_KEY)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "adapter_rejected"
    assert "keeps serving" in refused.text

    published = post(endpoint, "/adapters", body, ADMIN_KEY)
    assert published.status_code == 200, published.text
    assert [(a["name"], a["version"]) for a in published.json()["data"]] == [("agent", 3)]
    assert client.models.retrieve("agent").model_extra["version"] == 3
    for response in (missing, refused, arbitrary, published):
        assert str(endpoint["root"]) not in response.text  # no server path in any answer


def test_fifty_concurrent_streams_complete_without_error(endpoint) -> None:
    async def one(aclient: openai.AsyncOpenAI, i: int) -> tuple[float, float, str]:
        started = time.perf_counter()
        first = None
        finish = None
        stream = await aclient.chat.completions.create(
            model="agent" if i % 2 else "tiny",
            messages=[{"role": "user", "content": f"Task {i}: list the files."}],
            max_tokens=16,
            seed=i,
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        done = time.perf_counter()
        return (first or done) - started, done - started, finish or ""

    async def run_all() -> list[tuple[float, float, str] | BaseException]:
        aclient = openai.AsyncOpenAI(base_url=endpoint["info"].base_url, api_key=API_KEY, max_retries=0, timeout=300)
        return await asyncio.gather(*(one(aclient, i) for i in range(50)), return_exceptions=True)

    results = asyncio.run(run_all())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert all(finish in ("stop", "length") for _, _, finish in results)  # type: ignore[misc]
    latencies = sorted(total for _, total, _ in results)  # type: ignore[misc]
    first_tokens = sorted(first for first, _, _ in results)  # type: ignore[misc]
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))]
    print(
        f"\n50 concurrent streams: p50 {statistics.median(latencies):.2f} s, p99 {p99:.2f} s, "
        f"first token p50 {statistics.median(first_tokens):.2f} s"
    )


def test_a_burst_of_500_short_requests_completes_without_error(endpoint) -> None:
    async def one(aclient: openai.AsyncOpenAI, i: int) -> float:
        started = time.perf_counter()
        reply = await aclient.chat.completions.create(
            model="agent" if i % 2 else "tiny",
            messages=[{"role": "user", "content": f"Request {i}."}],
            max_tokens=2,
            seed=i,
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
        return time.perf_counter() - started

    async def run_all() -> list[float | BaseException]:
        aclient = openai.AsyncOpenAI(base_url=endpoint["info"].base_url, api_key=API_KEY, max_retries=0, timeout=600)
        return await asyncio.gather(*(one(aclient, i) for i in range(500)), return_exceptions=True)

    started = time.perf_counter()
    results = asyncio.run(run_all())
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], f"{len(errors)} of 500 failed, the first: {errors[:1]}"
    latencies = sorted(r for r in results if isinstance(r, float))
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))]
    rate = 500 / wall
    print(f"\n500-request burst: p50 {statistics.median(latencies):.2f} s, p99 {p99:.2f} s, {rate:.0f} requests/s")


def test_a_client_that_leaves_mid_stream_frees_its_engine_slot(endpoint) -> None:
    from ray import serve

    from services.serve.app import DEPLOYMENT

    replica = serve.get_deployment_handle(DEPLOYMENT, endpoint["config"].serve.app_name)

    def policy_health() -> Any:
        return replica.policy_health.remote().result(timeout_s=60)

    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "tiny", "prompt": [1, 5, 9], "max_tokens": MAX_MODEL_LEN - 8}
    # A random model can sample its end token early, and where depends on the CPU's arithmetic: take a seed whose
    # reply runs to max_tokens here, so the stream below can only end by the client leaving.
    body["seed"] = next(
        seed
        for seed in range(20)
        if httpx.post(
            endpoint["info"].base_url + "/completions", json={**body, "seed": seed}, headers=headers, timeout=120
        ).json()["choices"][0]["finish_reason"]
        == "length"
    )
    before = policy_health().streams_cancelled
    with httpx.stream(
        "POST", endpoint["info"].base_url + "/completions", json={**body, "stream": True}, headers=headers, timeout=120
    ) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # generating now
        assert policy_health().engine_requests == 1
    deadline = time.monotonic() + 30  # the connection is closed: the engine drops the request
    while (health := policy_health()).engine_requests or health.requests_in_flight:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert health.streams_cancelled == before + 1


def test_keys_reach_neither_the_run_directory_nor_the_logs(endpoint) -> None:
    """Runs last in the module: everything the tests above made the endpoint write is on disk by now."""
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    roots = [Path(endpoint["config"].paths.runs_dir), session / "logs"]
    searched = 0
    for root in roots:
        for path in (p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            searched += 1
            assert API_KEY.encode() not in data and ADMIN_KEY.encode() not in data, path
    assert searched > 10


def test_an_adapter_refused_at_start_is_one_error_not_a_restart_loop(endpoint) -> None:
    """Last: it replaces the module's app. The hf engine starts in seconds; the refusal does not depend on it."""
    from ray import serve

    from services.serve import AdapterSource, start_endpoint
    from services.serve.launch import EndpointStartError

    serve.delete("fieldkit-test")
    bad = endpoint["root"] / "refused" / "best"
    ref = write_adapter(endpoint["model_dir"], bad, "agent", 1, seed=4)
    probe = ref.probe.model_copy(update={"logprobs": [lp - 2.0 for lp in ref.probe.logprobs]})
    (bad / "adapter_ref.json").write_text(ref.model_copy(update={"probe": probe}).model_dump_json())
    config = endpoint["config"].model_copy(
        update={
            "model": endpoint["config"].model.model_copy(update={"engine": "hf"}),
            "serve": endpoint["config"].serve.model_copy(update={"app_name": "fieldkit-refused"}),
        }
    )
    started = time.perf_counter()
    with pytest.raises(EndpointStartError) as caught:
        start_endpoint(config, [AdapterSource(bad)])
    message = str(caught.value)
    assert "AdapterRejectedError" in message and "probe log-probs differ" in message and "\n" not in message
    assert "fieldkit-refused" not in serve.status().applications  # nothing left restarting
    print(f"\nrefused at start in {time.perf_counter() - started:.0f} s: {message}")
