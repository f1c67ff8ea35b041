"""The endpoint's pieces that need no engine: the OpenAI wire format (checked against the official client's own
types), request validation, stream deltas, adapter directories, settings, deploy/serve.yaml and the CLI's errors."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import openai.types as oai
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from fieldkit.config import RunConfig
from fieldkit.generation import GenerateDelta, GenerateResult, join_deltas, merge_deltas
from services.serve import translate
from services.serve.adapters import (
    REF_FILE,
    AdapterDirError,
    PublishedAdapters,
    adapter_ref_from_dir,
    default_name,
)
from services.serve.errors import OpenAIError, install_error_handlers, validation_message
from services.serve.errors import log as errors_log
from services.serve.schema import ChatCompletionRequest, CompletionRequest

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["ls -la && cat notes.md", "héllo wörld ✓ 日本語 🚀 done", "line one\nline two\n\ttabbed"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def result_for(tokenizer, text: str, finish: str = "stop", top: bool = False) -> GenerateResult:
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    return GenerateResult(
        prompt_token_ids=[1, 2, 3],
        token_ids=ids,
        text=tokenizer.decode(ids, skip_special_tokens=True),
        logprobs=[-0.5] * len(ids),
        top_logprobs=[{t: -0.5, 7: -1.5} for t in ids] if top else None,
        finish_reason=finish,
    )


def pieces_of(result: GenerateResult, size: int = 3) -> list[GenerateDelta]:
    """The result as an engine streams it: `size` tokens a piece, texts cut at arbitrary places."""
    cuts = list(range(0, len(result.token_ids), size))
    text_cuts = [round(len(result.text) * c / len(result.token_ids)) for c in cuts] + [len(result.text)]
    pieces = []
    for i, start in enumerate(cuts):
        end = start + size
        top = result.top_logprobs[start:end] if result.top_logprobs is not None else None
        pieces.append(
            GenerateDelta(
                token_ids=result.token_ids[start:end],
                text=result.text[text_cuts[i] : text_cuts[i + 1]],
                logprobs=result.logprobs[start:end],
                top_logprobs=top,
                finish_reason=result.finish_reason if end >= len(result.token_ids) else None,
                prompt_token_ids=result.prompt_token_ids if i == 0 else None,
            )
        )
    return pieces


async def aiter_of(pieces: list[GenerateDelta]) -> AsyncIterator[GenerateDelta]:
    for piece in pieces:
        yield piece


def collect(chunks: AsyncIterator[dict]) -> list[dict]:
    async def run() -> list[dict]:
        return [c async for c in chunks]

    return asyncio.run(run())


def test_pieces_join_to_the_whole_reply(tokenizer) -> None:
    result = result_for(tokenizer, TEXTS[1], top=True)
    pieces = pieces_of(result)
    assert join_deltas(pieces) == result
    assert merge_deltas(pieces[1:]).prompt_token_ids is None and merge_deltas(pieces).finish_reason == "stop"
    with pytest.raises(ValueError, match="did not finish"):
        join_deltas(pieces[:-1])


def test_coalescing_sends_the_first_piece_at_once_then_one_per_window() -> None:
    """An engine yielding a token every 2 ms: the first reaches the reader at once, the rest in ~20 ms batches."""
    from services.policy.stream import coalesce

    async def engine(n: int) -> AsyncIterator[GenerateDelta]:
        for i in range(n):
            await asyncio.sleep(0.002)
            yield GenerateDelta(
                token_ids=[i], text=f"{i},", logprobs=[-0.1], finish_reason="length" if i == n - 1 else None
            )

    async def run(window_s: float) -> list[tuple[float, GenerateDelta]]:
        started = time.perf_counter()
        return [(time.perf_counter() - started, p) async for p in coalesce(engine(40), window_s)]

    timed = asyncio.run(run(0.02))
    pieces = [p for _, p in timed]
    assert [t for p in pieces for t in p.token_ids] == list(range(40))
    assert "".join(p.text for p in pieces) == "".join(f"{i}," for i in range(40))
    assert pieces[0].token_ids == [0] and pieces[-1].finish_reason == "length"
    assert 2 <= len(pieces) <= 12  # ~80 ms of tokens in 20 ms windows, not 40 messages
    assert len(asyncio.run(run(0.0))) > len(pieces)

    async def failing() -> AsyncIterator[GenerateDelta]:
        yield GenerateDelta(token_ids=[1], text="a", logprobs=[-0.1])
        raise RuntimeError("engine died")

    async def read_failing() -> list[GenerateDelta]:
        return [p async for p in coalesce(failing(), 0.02)]

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(read_failing())


def test_closing_the_coalesced_stream_closes_the_engine_stream() -> None:
    from services.policy.stream import coalesce

    closed = asyncio.Event()

    async def engine() -> AsyncIterator[GenerateDelta]:
        try:
            for i in range(1000):
                await asyncio.sleep(0.001)
                yield GenerateDelta(token_ids=[i], text="x", logprobs=[-0.1])
        finally:
            closed.set()

    async def run() -> bool:
        stream = coalesce(engine(), 0.02)
        await anext(stream)
        await stream.aclose()
        return closed.is_set()

    assert asyncio.run(run())


def test_chat_bodies_parse_as_the_official_client_types(tokenizer) -> None:
    results = [result_for(tokenizer, TEXTS[0], top=True), result_for(tokenizer, TEXTS[1], "length", top=True)]
    meta = {"id": "chatcmpl-x", "created": 1, "model": "agent", "system_fingerprint": "fieldkit-hf"}
    body = oai.chat.ChatCompletion.model_validate(translate.chat_completion(meta, tokenizer, results, True))
    assert [c.message.content for c in body.choices] == [TEXTS[0], TEXTS[1]]
    assert body.usage.prompt_tokens == 3 and body.usage.completion_tokens == sum(len(r.token_ids) for r in results)
    assert len(body.choices[0].logprobs.content) == len(results[0].token_ids)
    streams = [aiter_of(pieces_of(r)) for r in results]
    chunks = [
        oai.chat.ChatCompletionChunk.model_validate(c)
        for c in collect(translate.chat_stream(meta, tokenizer, streams, True, include_usage=True))
    ]
    choices = [c.choices[0] for c in chunks if c.choices]
    assert ["".join(c.delta.content or "" for c in choices if c.index == i) for i in (0, 1)] == TEXTS[:2]
    assert [c.finish_reason for c in choices if c.finish_reason] == ["stop", "length"]
    streamed_logprobs = [t for c in choices if c.index == 0 and c.logprobs for t in c.logprobs.content]
    assert [t.logprob for t in streamed_logprobs] == results[0].logprobs
    assert chunks[-1].usage.total_tokens == body.usage.total_tokens


def test_completion_bodies_parse_as_the_official_client_types(tokenizer) -> None:
    results = [result_for(tokenizer, t) for t in TEXTS[:2]]
    meta = {"id": "cmpl-x", "created": 1, "model": "tiny", "system_fingerprint": "fieldkit-hf"}
    body = oai.Completion.model_validate(
        translate.text_completion(meta, tokenizer, results, ["P0", "P1"], n=1, echo=True, logprobs=True)
    )
    assert [c.text for c in body.choices] == ["P0" + TEXTS[0], "P1" + TEXTS[1]]
    assert body.choices[1].logprobs.text_offset[0] == 2  # after the echoed prompt
    assert body.usage.prompt_tokens == 6
    # The client reads stream chunks as Completion objects without validating them (finish_reason is null until
    # the last chunk of a choice), so the shape is checked here by hand.
    streams = [aiter_of(pieces_of(r)) for r in results]
    chunks = collect(translate.text_stream(meta, tokenizer, streams, ["P0", "P1"], 1, True, True, include_usage=True))
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert ["".join(c["text"] for c in choices if c["index"] == i) for i in (0, 1)] == [c.text for c in body.choices]
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["stop", "stop"]
    offsets = [o for c in choices if c["index"] == 1 and c["logprobs"] for o in c["logprobs"]["text_offset"]]
    assert offsets == body.choices[1].logprobs.text_offset  # the same offsets as the whole body's
    assert chunks[-1]["usage"] == body.usage.model_dump(exclude_none=True)


def errors_of(model: type, body: dict) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return validation_message(caught.value.errors())


def test_requests_validate_the_way_openai_does() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    parsed = ChatCompletionRequest.model_validate({**chat, "temperature": None, "stop": "END", "n": None})
    assert (parsed.temperature, parsed.n, parsed.stop_list) == (1.0, 1, ["END"])
    assert translate.chat_messages(parsed.messages)[0].content == "hi"
    assert errors_of(ChatCompletionRequest, {**chat, "frobnicate": 1}) == (
        "Unrecognized request argument supplied: frobnicate",
        "frobnicate",
    )
    assert errors_of(ChatCompletionRequest, {**chat, "stop": ["a", "b", "c", "d", "e"]})[1] == "stop"
    assert errors_of(ChatCompletionRequest, {**chat, "presence_penalty": 0.5})[1] == "presence_penalty"
    assert "needs logprobs" in errors_of(ChatCompletionRequest, {**chat, "top_logprobs": 3})[0]
    assert errors_of(ChatCompletionRequest, {**chat, "response_format": {"type": "json_object"}})[1].startswith(
        "response_format"
    )
    missing = errors_of(ChatCompletionRequest, {"messages": chat["messages"]})
    assert missing == ("model: required parameter is missing", "model")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("a", ["a"]), (["a", "b"], ["a", "b"]), ([5, 6], [[5, 6]]), ([[5], [6, 7]], [[5], [6, 7]])],
)
def test_completion_prompt_forms(prompt, expected) -> None:
    assert CompletionRequest.model_validate({"model": "m", "prompt": prompt}).prompts() == expected


def test_completion_refuses_what_it_cannot_do() -> None:
    assert "empty" in errors_of(CompletionRequest, {"model": "m", "prompt": [[]]})[0]
    assert "best_of" in errors_of(CompletionRequest, {"model": "m", "prompt": "a", "best_of": 3})[0]
    assert errors_of(CompletionRequest, {"model": "m", "prompt": "a", "suffix": "x"})[1] == "suffix"


def test_error_bodies_of_unknown_routes_and_crashes(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput reading /srv/secret/runs/x/adapter")

    @app.get("/teapot")
    async def teapot() -> None:
        raise OpenAIError(418, "short and stout", code="teapot")

    client = TestClient(app, raise_server_exceptions=False)
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    with caplog.at_level(logging.ERROR, logger=errors_log.name):
        crash = client.get("/boom")
    error = crash.json()["error"]
    assert crash.status_code == 500 and (error["type"], error["param"], error["code"]) == ("server_error", None, None)
    # The caller learns the kind and an id, never the exception's text (it can name server paths); the log has both.
    error_id = re.fullmatch(
        r"internal error (\w{12}) \(RuntimeError\); the server's log has the details", error["message"]
    )
    assert error_id is not None and "/srv/secret" not in crash.text
    logged = [r for r in caplog.records if error_id[1] in r.getMessage()]
    assert len(logged) == 1 and "/srv/secret/runs/x/adapter" in str(logged[0].exc_info[1])
    assert client.get("/teapot").json()["error"]["message"] == "short and stout"


def write_peft_config(path: Path, rank: int = 8) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    return path


def test_adapter_directories_become_refs(tmp_path: Path) -> None:
    best = write_peft_config(tmp_path / "grpo-run" / "best")
    ref = adapter_ref_from_dir(best)
    assert (ref.name, ref.version, ref.rank, ref.probe) == ("grpo-run", 0, 8, None)
    assert ref.path == str(best.resolve())
    (best / REF_FILE).write_text(ref.model_copy(update={"name": "stored", "version": 7}).model_dump_json())
    assert (adapter_ref_from_dir(best).name, adapter_ref_from_dir(best).version) == ("stored", 7)
    assert adapter_ref_from_dir(best, "mine").name == "mine"
    assert default_name(tmp_path / "weird name!") == "weird-name"
    with pytest.raises(AdapterDirError, match=r"no adapter_config\.json"):
        adapter_ref_from_dir(tmp_path / "nowhere")
    (best / REF_FILE).write_text("{")
    with pytest.raises(AdapterDirError, match=r"adapter_ref\.json: not an AdapterRef"):
        adapter_ref_from_dir(best)


def test_published_refs_keep_the_newest_per_name(tmp_path: Path) -> None:
    published = PublishedAdapters(tmp_path / "published")
    assert published.refs() == []
    ref = adapter_ref_from_dir(write_peft_config(tmp_path / "a"), "agent")
    published.record(ref)
    published.record(ref.model_copy(update={"version": 2}))
    assert [(r.name, r.version) for r in published.refs()] == [("agent", 2)]
    published.clear()
    assert published.refs() == []


def config_for(tmp_path: Path, **serve: object) -> RunConfig:
    return RunConfig.model_validate(
        {"paths": {"models_dir": str(REPO / "runs" / "models"), "runs_dir": str(tmp_path / "runs")}, "serve": serve}
    )


def test_settings_resolve_key_names_and_probes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fieldkit.training.random_adapter import build_random_adapter
    from services.serve.launch import AdapterSource, base_model_id, serve_settings

    build_random_adapter(tiny_model_dir, tmp_path / "run-x" / "best", seed=3)  # PEFT files only, no ref file
    source = AdapterSource(tmp_path / "run-x" / "best")
    monkeypatch.delenv("FIELDKIT_API_KEY", raising=False)
    settings = serve_settings(config_for(tmp_path, api_key="from-config"), [source])
    assert settings.api_key.get_secret_value() == "from-config" and settings.base_name == "tiny"
    assert settings.admin_key is None
    ref = settings.adapters[0]
    assert ref.name == "run-x" and ref.probe is not None  # scored here from the files, so the engine is checked
    assert len(ref.probe.logprobs) == len(ref.probe.continuation_token_ids)
    assert Path(settings.published_dir).is_absolute() and settings.config.paths.models_dir.is_absolute()
    monkeypatch.setenv("FIELDKIT_API_KEY", "from-env")
    assert serve_settings(config_for(tmp_path, api_key="from-config")).api_key.get_secret_value() == "from-env"
    with pytest.raises(ValueError, match="differ from the base model id"):
        serve_settings(config_for(tmp_path), [AdapterSource(source.path, "tiny")])
    assert base_model_id(config_for(tmp_path, base_name="my-base")) == "my-base"
    named = RunConfig.model_validate({"model": {"name_or_path": str(tiny_model_dir)}})
    assert base_model_id(named) == tiny_model_dir.name


def test_keys_protect_what_leaves_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr

    from fieldkit.config import ServeConfig
    from services.serve.keys import ServeKeyError, check_admin, check_bearer, is_loopback, resolve_keys

    monkeypatch.delenv("FIELDKIT_API_KEY", raising=False)
    monkeypatch.delenv("FIELDKIT_ADMIN_KEY", raising=False)
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "::", "myhost")] == [False] * 4
    assert resolve_keys(ServeConfig(), "127.0.0.1") == (None, None)  # loopback: a key is optional
    for host in ("0.0.0.0", "10.0.0.7"):
        with pytest.raises(ServeKeyError, match=f"serve.host '{host}' is not a loopback address"):
            resolve_keys(ServeConfig(host=host), host)
    api, admin = resolve_keys(ServeConfig(api_key="k1", admin_key="k2"), "0.0.0.0")
    assert (api.get_secret_value(), admin.get_secret_value()) == ("k1", "k2")
    with pytest.raises(ServeKeyError, match="equals the API key"):
        resolve_keys(ServeConfig(api_key="same", admin_key="same"), "127.0.0.1")
    monkeypatch.setenv("FIELDKIT_ADMIN_KEY", "from-env")
    assert resolve_keys(ServeConfig(admin_key="k2"), "127.0.0.1")[1].get_secret_value() == "from-env"

    key = SecretStr("s3cret")
    check_bearer("Bearer s3cret", key)
    for sent in (None, "Bearer wrong", "Basic s3cret", "s3cret"):
        with pytest.raises(OpenAIError) as caught:
            check_bearer(sent, key)
        assert caught.value.status == 401 and "s3cret" not in caught.value.message
    with pytest.raises(OpenAIError) as off:
        check_admin("Bearer anything", None)  # no admin key: publishing is off, not open
    assert off.value.status == 403 and off.value.code == "publishing_disabled"


def test_keys_never_reach_a_dump_of_the_config(tmp_path: Path) -> None:
    config = config_for(tmp_path, api_key="key-4d1e", admin_key="admin-9c2b")
    assert config.serve.api_key.get_secret_value() == "key-4d1e"
    dumped = yaml.safe_dump(config.model_dump(mode="json")) + config.model_dump_json() + repr(config)
    assert "key-4d1e" not in dumped and "admin-9c2b" not in dumped
    assert config.config_hash() == config_for(tmp_path).config_hash()  # a key is no part of what a run is
    assert RunConfig.model_validate(config.model_dump(mode="json")).serve.api_key is None


def write_run_adapter(tiny_model_dir: Path, runs: Path, run: str, version: int) -> Path:
    from fieldkit.training.random_adapter import build_random_adapter

    path = runs / run / "adapters" / f"{run}-v{version}"
    build_random_adapter(tiny_model_dir, path, seed=version)
    return path


def test_publishing_takes_run_storage_adapters_by_run_and_version(tmp_path: Path, tiny_model_dir: Path) -> None:
    from fieldkit.storage import Storage
    from services.serve.adapters import RunAdapterError, run_adapter_ref, scrub_paths
    from services.serve.schema import PublishRequest

    runs = Storage(str(tmp_path / "runs"))
    path = write_run_adapter(tiny_model_dir, tmp_path / "runs", "grpo-a", 3)
    ref = run_adapter_ref(runs, "grpo-a", 3, None)
    assert (ref.name, ref.version, ref.path) == ("grpo-a", 3, str(path.resolve()))
    assert run_adapter_ref(runs, "grpo-a", 3, "agent").name == "agent"
    for run, version in (("grpo-a", 4), ("grpo-a", "best"), ("nobody", 1), ("..", 3)):
        with pytest.raises(RunAdapterError) as caught:
            run_adapter_ref(runs, run, version, None)
        assert str(tmp_path) not in str(caught.value) and repr(run) in str(caught.value)
    with pytest.raises(RunAdapterError, match="versions: 3; no best"):
        run_adapter_ref(runs, "grpo-a", 4, None)
    outside = write_run_adapter(tiny_model_dir, tmp_path / "elsewhere", "grpo-a", 5)
    (tmp_path / "runs" / "grpo-a" / "adapters" / "grpo-a-v5").symlink_to(outside)
    with pytest.raises(RunAdapterError, match="no such adapter"):  # a link out of run storage is not storage
        run_adapter_ref(runs, "grpo-a", 5, None)
    for body in (
        {"run": "../x", "version": 1},
        {"run": "a", "version": -1},
        {"path": "/etc", "run": "a", "version": 1},
    ):
        with pytest.raises(ValidationError):
            PublishRequest.model_validate(body)
    assert PublishRequest.model_validate({"run": "a", "version": "best"}).version == "best"
    assert scrub_paths(f"cannot read {path}/x", {str(path.resolve()): "run 'grpo-a' version 3"}) == (
        "cannot read run 'grpo-a' version 3/x"
    )


def test_an_adapter_from_a_run_is_served_on_that_runs_base(tmp_path: Path) -> None:
    from services.serve.launch import AdapterSource, config_from_runs, run_config_of

    home = tmp_path / "project"
    run = home / "runs" / "grpo-a"
    (run / "best").mkdir(parents=True)
    trained = RunConfig.model_validate(
        {"model": {"name_or_path": "tiny-agent", "engine": "hf", "max_model_len": 1024}, "lora": {"max_lora_rank": 32}}
    )
    (run / "config.yaml").write_text(yaml.safe_dump(trained.model_dump(mode="json")))
    written = str((run / "config.yaml").resolve())
    assert run_config_of(run / "best") == written == run_config_of(run / "adapters" / "grpo-a-v2")
    assert run_config_of(tmp_path) is None
    config, source = config_from_runs([AdapterSource(run / "best")], RunConfig())
    assert source == written
    assert (config.model.name_or_path, config.model.engine, config.model.max_model_len) == ("tiny-agent", "hf", 1024)
    assert config.lora.max_lora_rank == 32 and config.paths.models_dir == home / "runs" / "models"
    assert config.serve == RunConfig().serve
    assert config_from_runs([AdapterSource(tmp_path)], RunConfig()) == (RunConfig(), None)


def test_deploy_serve_yaml_is_a_valid_serve_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    from services.serve import launch
    from services.serve.app import DEPLOYMENT

    raw = yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    module, attribute = app.import_path.split(":")
    assert module == launch.__name__ and getattr(launch, attribute) is launch.build_app
    args = launch.BuildArgs.model_validate(app.args)
    assert RunConfig.from_yaml(REPO / args.config).serve.app_name == app.name
    assert [d.name for d in app.deployments] == [DEPLOYMENT]
    assert schema.http_options.host == "127.0.0.1"


def test_cli_refuses_a_bad_adapter_before_starting_anything(tmp_path: Path) -> None:
    import ray

    from fieldkit.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--adapter", str(tmp_path / "missing"), "--config", str(REPO / "deploy/configs/demo-cpu.yaml")]
    )
    assert result.exit_code == 2
    assert "no adapter_config.json" in result.output and "missing" in result.output
    assert not ray.is_initialized()
    mismatched = CliRunner().invoke(app, ["serve", "--name", "a", "--name", "b", "--adapter", str(tmp_path)])
    assert mismatched.exit_code == 2 and "2 --name for 1 --adapter" in mismatched.output
