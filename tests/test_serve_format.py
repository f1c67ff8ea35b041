"""The endpoint's pieces that need no engine: the OpenAI wire format (checked against the official client's own
types), request validation, stream deltas, adapter directories, settings, deploy/serve.yaml and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import openai.types as oai
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from fieldkit.config import RunConfig
from fieldkit.generation import GenerateResult
from services.serve import translate
from services.serve.adapters import (
    REF_FILE,
    AdapterDirError,
    PublishedAdapters,
    adapter_ref_from_dir,
    default_name,
)
from services.serve.errors import OpenAIError, install_error_handlers, validation_message
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


@pytest.mark.parametrize("text", TEXTS)
def test_stream_deltas_join_to_the_text_one_per_token(tokenizer, text: str) -> None:
    result = result_for(tokenizer, text)
    deltas = translate.text_deltas(tokenizer, result.token_ids, result.text)
    assert "".join(deltas) == result.text == text
    assert len(deltas) == len(result.token_ids)
    assert not any("\ufffd" in d for d in deltas)  # a split multi-byte character waits for its last byte


def test_stream_deltas_stop_at_a_stop_string_cut(tokenizer) -> None:
    result = result_for(tokenizer, "echo hi\nTASK_COMPLETE and more")
    cut = result.text[: result.text.index("TASK")]
    assert "".join(translate.text_deltas(tokenizer, result.token_ids, cut)) == cut


def test_chat_bodies_parse_as_the_official_client_types(tokenizer) -> None:
    results = [result_for(tokenizer, TEXTS[0], top=True), result_for(tokenizer, TEXTS[1], "length", top=True)]
    meta = {"id": "chatcmpl-x", "created": 1, "model": "agent", "system_fingerprint": "fieldkit-hf"}
    body = oai.chat.ChatCompletion.model_validate(translate.chat_completion(meta, tokenizer, results, True))
    assert [c.message.content for c in body.choices] == [TEXTS[0], TEXTS[1]]
    assert body.usage.prompt_tokens == 3 and body.usage.completion_tokens == sum(len(r.token_ids) for r in results)
    assert len(body.choices[0].logprobs.content) == len(results[0].token_ids)
    chunks = [
        oai.chat.ChatCompletionChunk.model_validate(c)
        for c in translate.chat_chunks(meta, tokenizer, results, True, include_usage=True)
    ]
    choices = [c.choices[0] for c in chunks if c.choices]
    assert ["".join(c.delta.content or "" for c in choices if c.index == i) for i in (0, 1)] == TEXTS[:2]
    assert [c.finish_reason for c in choices if c.finish_reason] == ["stop", "length"]
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
    chunks = list(translate.text_chunks(meta, tokenizer, results, [], 1, False, True, include_usage=False))
    assert all(c["object"] == "text_completion" and len(c["choices"]) == 1 for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == 0) == TEXTS[0]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["stop", "stop"]


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


def test_error_bodies_of_unknown_routes_and_crashes() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    @app.get("/teapot")
    async def teapot() -> None:
        raise OpenAIError(418, "short and stout", code="teapot")

    client = TestClient(app, raise_server_exceptions=False)
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    crash = client.get("/boom")
    assert crash.status_code == 500 and crash.json()["error"] == {
        "message": "RuntimeError: kaput",
        "type": "server_error",
        "param": None,
        "code": None,
    }
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
    assert settings.api_key == "from-config" and settings.base_name == "tiny"
    ref = settings.adapters[0]
    assert ref.name == "run-x" and ref.probe is not None  # scored here from the files, so the engine is checked
    assert len(ref.probe.logprobs) == len(ref.probe.continuation_token_ids)
    assert Path(settings.published_dir).is_absolute() and settings.config.paths.models_dir.is_absolute()
    monkeypatch.setenv("FIELDKIT_API_KEY", "from-env")
    assert serve_settings(config_for(tmp_path, api_key="from-config")).api_key == "from-env"
    with pytest.raises(ValueError, match="differ from the base model id"):
        serve_settings(config_for(tmp_path), [AdapterSource(source.path, "tiny")])
    assert base_model_id(config_for(tmp_path, base_name="my-base")) == "my-base"
    named = RunConfig.model_validate({"model": {"name_or_path": str(tiny_model_dir)}})
    assert base_model_id(named) == tiny_model_dir.name


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
