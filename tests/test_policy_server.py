"""The PolicyServer actor over the real engines: vLLM CPU and transformers+PEFT run the same tests.

One Ray cluster and one server per engine for the module (a vLLM start costs ~40 s here). Each test loads adapters
under its own names, so tests do not depend on each other's versions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldkit.config import RunConfig
from fieldkit.generation import (
    AdapterRejectedError,
    GenerateRequest,
    PolicyError,
    PromptTooLongError,
    UnknownAdapterError,
)
from fieldkit.training.records import AdapterRef

pytestmark = [pytest.mark.engine, pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent
MAX_MODEL_LEN = 512
SAME_TOKENS_ATOL = 0.02  # generation (decode) vs score (prefill) of the same tokens: kernel noise only


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, AdapterRef]:
    from fieldkit.training.random_adapter import build_random_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": build_random_adapter(tiny_model_dir, root / "a", seed=1),
        "b": build_random_adapter(tiny_model_dir, root / "b", seed=2),
    }


@pytest.fixture(scope="module", params=["vllm", "hf"])
def server(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Any]:
    import ray

    from services.policy import start_policy_server

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=4, include_dashboard=False)  # never join a `ray start` cluster
    config = RunConfig.model_validate(
        {
            "model": {"engine": request.param, "max_model_len": MAX_MODEL_LEN},
            "lora": {"keep_versions": 2},
            "paths": {"models_dir": str(REPO / "runs" / "models")},
        }
    )
    handle = start_policy_server(config)
    yield handle
    ray.get(handle.shutdown.remote())
    ray.kill(handle)
    if started_ray:
        ray.shutdown()


def call(handle: Any, method: str, *args: Any) -> Any:
    import ray

    return ray.get(getattr(handle, method).remote(*args))


def publish(handle: Any, ref: AdapterRef, name: str, version: int, **changes: Any) -> Any:
    return call(handle, "load_adapter", ref.model_copy(update={"name": name, "version": version, **changes}))


def mean_abs_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def chat(content: str, **fields: Any) -> GenerateRequest:
    return GenerateRequest(messages=[{"role": "user", "content": content}], **fields)


def test_seeded_generation_is_reproducible(server: Any) -> None:
    request = chat("List the files.", max_tokens=16, temperature=1.0, seed=7)
    first, again = call(server, "generate", request), call(server, "generate", request)
    other = call(server, "generate", request.model_copy(update={"seed": 8}))
    assert first.prompt_token_ids[0] == 1  # <|im_start|>: the chat template was rendered
    assert first.token_ids == again.token_ids and first.text == again.text
    assert first.logprobs == pytest.approx(again.logprobs, abs=1e-4)
    assert first.token_ids != other.token_ids
    assert first.adapter is None and first.adapter_version == -1


def test_generated_logprobs_match_score_of_the_same_tokens(server: Any, adapters: dict[str, AdapterRef]) -> None:
    publish(server, adapters["a"], "match", 1)
    for adapter in (None, "match"):
        result = call(server, "generate", chat("Show the log.", max_tokens=12, seed=3, top_logprobs=5, adapter=adapter))
        scored = call(server, "score", result.prompt_token_ids, result.token_ids, adapter)
        assert scored == pytest.approx(result.logprobs, abs=SAME_TOKENS_ATOL)
        assert all(len(row) == 5 for row in result.top_logprobs)
        for token, logprob, row in zip(result.token_ids, result.logprobs, result.top_logprobs, strict=True):
            assert list(row.values()) == sorted(row.values(), reverse=True)
            assert logprob <= max(row.values()) + 1e-4
            if token in row:
                assert row[token] == pytest.approx(logprob, abs=1e-4)


def test_adapter_changes_logprobs_and_reports_its_version(server: Any, adapters: dict[str, AdapterRef]) -> None:
    probe = adapters["a"].probe
    base = call(server, "score", probe.prompt_token_ids, probe.continuation_token_ids, None)
    info = publish(server, adapters["a"], "policy", 1)
    assert info.version == 1 and info.probe.passed and info.probe.distinguishable_from_base
    adapted = call(server, "score", probe.prompt_token_ids, probe.continuation_token_ids, "policy")
    assert mean_abs_diff(adapted, probe.logprobs) < 0.05
    assert mean_abs_diff(adapted, base) > 0.05
    assert call(server, "generate", chat("ls", max_tokens=4, adapter="policy")).adapter_version == 1

    publish(server, adapters["b"], "policy", 2)
    result = call(server, "generate", chat("ls", max_tokens=4, adapter="policy"))
    assert (result.adapter, result.adapter_version) == ("policy", 2)
    probe_b = adapters["b"].probe
    now = call(server, "score", probe_b.prompt_token_ids, probe_b.continuation_token_ids, "policy")
    assert mean_abs_diff(now, probe_b.logprobs) < 0.05
    assert call(server, "health").adapters["policy"] == 2


def test_wrong_probe_is_refused_and_previous_version_keeps_serving(
    server: Any, adapters: dict[str, AdapterRef]
) -> None:
    publish(server, adapters["a"], "guarded", 1)
    with pytest.raises(AdapterRejectedError, match=r"probe log-probs differ.*v1 keeps serving"):
        publish(server, adapters["b"], "guarded", 2, probe=adapters["a"].probe)  # b's weights, a's probe
    assert call(server, "generate", chat("ls", max_tokens=4, adapter="guarded")).adapter_version == 1
    probe = adapters["a"].probe
    served = call(server, "score", probe.prompt_token_ids, probe.continuation_token_ids, "guarded")
    assert mean_abs_diff(served, probe.logprobs) < 0.05
    with pytest.raises(AdapterRejectedError, match="not newer than the serving v1"):
        publish(server, adapters["a"], "guarded", 1)


def test_broken_adapters_are_refused_with_the_reason(
    server: Any, adapters: dict[str, AdapterRef], tmp_path: Path
) -> None:
    good = adapters["a"]
    publish(server, good, "sturdy", 1)

    def broken_copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(good.path, target)
        return target

    truncated = broken_copy("truncated")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    garbled = broken_copy("garbled")
    (garbled / "adapter_config.json").write_text("{not json")
    too_big = broken_copy("too_big")
    config = json.loads((too_big / "adapter_config.json").read_text())
    (too_big / "adapter_config.json").write_text(json.dumps({**config, "r": 128}))
    cases = [
        (tmp_path / "missing", {}, "is not a directory"),
        (truncated, {}, "are corrupt: tensor data runs past the end"),
        (garbled, {}, "cannot read"),
        (too_big, {"rank": 128}, "exceeds the engine's lora.max_lora_rank=64"),
        (Path(good.path), {"rank": 16}, "the AdapterRef says 16"),
        (Path(good.path), {"probe": None}, "has no probe"),
    ]
    for path, changes, reason in cases:
        with pytest.raises(AdapterRejectedError, match=reason):
            publish(server, good, "sturdy", 2, path=str(path), **changes)
    assert call(server, "health").ok
    assert call(server, "generate", chat("ls", max_tokens=4, adapter="sturdy")).adapter_version == 1


def test_weights_the_engine_cannot_load_are_refused(
    server: Any, adapters: dict[str, AdapterRef], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    good = adapters["a"]
    target = tmp_path / "misshapen"
    shutil.copytree(good.path, target)
    tensors = load_file(target / "adapter_model.safetensors")
    save_file(
        {k: v.T.contiguous() if "lora_A" in k else v for k, v in tensors.items()}, target / "adapter_model.safetensors"
    )
    with pytest.raises(AdapterRejectedError, match="the engine could not load"):
        publish(server, good, "misshapen", 1, path=str(target))
    assert call(server, "health").ok
    assert call(server, "generate", chat("ls", max_tokens=4)).token_ids


def test_two_adapters_serve_side_by_side(server: Any, adapters: dict[str, AdapterRef]) -> None:
    import ray

    publish(server, adapters["a"], "left", 1)
    publish(server, adapters["b"], "right", 1)
    names = ["left", "right", None, "left", "right"]
    results = ray.get(
        [server.generate.remote(chat("ls", max_tokens=8, seed=i, adapter=n)) for i, n in enumerate(names)]
    )
    assert [(r.adapter, r.adapter_version) for r in results] == [(n, 1 if n else -1) for n in names]
    for name, key in (("left", "a"), ("right", "b")):
        probe = adapters[key].probe
        served = call(server, "score", probe.prompt_token_ids, probe.continuation_token_ids, name)
        assert mean_abs_diff(served, probe.logprobs) < 0.05


def test_old_versions_are_evicted_beyond_keep_versions(server: Any, adapters: dict[str, AdapterRef]) -> None:
    for version, key in ((1, "a"), (2, "b"), (3, "a")):
        publish(server, adapters[key], "rolling", version)
    kept = sorted(a.version for a in call(server, "adapters") if a.name == "rolling")
    assert kept == [2, 3]
    lora_ids = [a.lora_id for a in call(server, "adapters")]
    assert len(lora_ids) == len(set(lora_ids))


def test_unloading_a_name_stops_serving_it_and_frees_the_engine(server: Any, adapters: dict[str, AdapterRef]) -> None:
    import ray

    def resident() -> list[str]:  # the hf engine's PEFT adapters; vLLM's are checked through the registry
        return ray.get(server.__ray_call__.remote(
            lambda s: list(s._engine._peft.peft_config) if s._model.engine == "hf" else []))  # fmt: skip

    publish(server, adapters["a"], "retired", 1)
    publish(server, adapters["b"], "retired", 2)
    before = ray.get(server.__ray_call__.remote(lambda s: len(s._registry.loaded())))
    call(server, "unload_adapter", "retired")
    assert "retired" not in call(server, "health").adapters
    assert ray.get(server.__ray_call__.remote(lambda s: len(s._registry.loaded()))) == before - 2
    assert not [key for key in resident() if key.startswith("retired@")]
    with pytest.raises(UnknownAdapterError, match="'retired' is not loaded"):
        call(server, "generate", chat("ls", max_tokens=2, adapter="retired"))
    call(server, "unload_adapter", "retired")  # twice, or a name never loaded: nothing to do
    publish(server, adapters["a"], "retired", 3)  # the name can serve again
    assert call(server, "generate", chat("ls", max_tokens=2, adapter="retired")).adapter_version == 3


def test_bad_requests_are_refused_and_the_server_keeps_serving(server: Any) -> None:
    with pytest.raises(UnknownAdapterError, match="'nobody' is not loaded"):
        call(server, "generate", chat("ls", adapter="nobody"))
    with pytest.raises(PromptTooLongError, match=f"max_model_len={MAX_MODEL_LEN}"):
        call(server, "generate", GenerateRequest(prompt_token_ids=[5] * MAX_MODEL_LEN))
    with pytest.raises(PolicyError, match="token id 999999 is outside the vocabulary"):
        call(server, "generate", GenerateRequest(prompt_token_ids=[1, 999999]))
    with pytest.raises(PromptTooLongError):
        call(server, "score", [5] * (MAX_MODEL_LEN - 2), [5, 5])
    result = call(server, "generate", chat("ls", max_tokens=6))
    assert len(result.token_ids) <= 6
    assert call(server, "health").ok


def test_max_tokens_context_and_stop_strings(server: Any) -> None:
    long_prompt = [5] * (MAX_MODEL_LEN - 3)
    capped = call(server, "generate", GenerateRequest(prompt_token_ids=long_prompt, max_tokens=50, temperature=0.0))
    assert len(capped.token_ids) <= 3
    free = call(server, "generate", GenerateRequest(prompt_token_ids=[1, 5, 9], max_tokens=24, temperature=0.0))
    assert len(free.token_ids) == 24 and free.finish_reason == "length"
    stop = free.text[len(free.text) // 2 :][:2]
    stopped = call(
        server, "generate", GenerateRequest(prompt_token_ids=[1, 5, 9], max_tokens=24, temperature=0.0, stop=[stop])
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]


def test_streamed_pieces_join_to_the_reply_and_a_cancelled_stream_frees_the_engine(server: Any) -> None:
    import time

    import ray

    free = GenerateRequest(prompt_token_ids=[1, 5, 9], max_tokens=24, temperature=0.0, top_logprobs=2)
    whole = call(server, "generate", free)
    stop = whole.text[len(whole.text) // 2 :][:2]
    for request in (free, free.model_copy(update={"stop": [stop]})):
        expected = call(server, "generate", request)
        pieces = [ray.get(ref) for ref in server.generate_stream.remote(request)]
        assert [p.finish_reason for p in pieces][-1] == expected.finish_reason
        assert all(p.finish_reason is None for p in pieces[:-1]) and pieces[0].prompt_token_ids == [1, 5, 9]
        assert "".join(p.text for p in pieces) == expected.text
        assert [t for p in pieces for t in p.token_ids] == expected.token_ids
        assert len([t for p in pieces for t in p.top_logprobs]) == len(expected.token_ids)

    before = call(server, "health").streams_cancelled
    long = GenerateRequest(prompt_token_ids=[1, 5, 9], max_tokens=MAX_MODEL_LEN - 4, temperature=0.0)
    stream = server.generate_stream.remote(long)
    ray.get(next(stream))  # generating now
    ray.cancel(stream)
    deadline = time.monotonic() + 30
    while (health := call(server, "health")).engine_requests or health.requests_in_flight:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert health.streams_cancelled == before + 1


def test_many_requests_in_flight_and_load_figures(server: Any) -> None:
    import ray

    refs = [server.generate.remote(chat("ls", max_tokens=16, seed=i)) for i in range(8)]
    assert all(len(r.token_ids) >= 1 for r in ray.get(refs))
    health = call(server, "health")
    assert health.ok and health.requests_in_flight == 0
    assert health.tokens_per_s > 0 and 0 < health.busy_fraction <= 1


def test_concurrent_generation_during_hot_load_keeps_its_version(server: Any, adapters: dict[str, AdapterRef]) -> None:
    import ray

    publish(server, adapters["a"], "live", 1)
    during = [server.generate.remote(chat("ls", max_tokens=24, seed=i, adapter="live")) for i in range(4)]
    loaded = call(server, "load_adapter", adapters["b"].model_copy(update={"name": "live", "version": 2}))
    versions = {r.adapter_version for r in ray.get(during)}
    assert versions <= {1, 2} and loaded.version == 2
    assert call(server, "generate", chat("ls", max_tokens=2, adapter="live")).adapter_version == 2


def test_hf_sampling_log_probs_are_of_the_tempered_nucleus() -> None:
    """The hf engine's half of the log-prob convention, by hand: softmax(logits / T) renormalised over top-p."""
    import math

    import torch

    from services.policy.hf_engine import _sampling_logprobs

    logits_v = torch.tensor([2.0, 1.0, 0.0, -1.0])
    tempered = torch.log_softmax(logits_v / 0.5, -1)
    assert _sampling_logprobs(logits_v, 0.5, 1.0).tolist() == pytest.approx(tempered.tolist())
    assert _sampling_logprobs(logits_v, 0.0, 1.0).tolist() == pytest.approx(torch.log_softmax(logits_v, -1).tolist())
    # T = 1: probabilities .64 .24 .09 .03; top_p .8 keeps the first two (.64 < .8 <= .88), renormalised
    nucleus = _sampling_logprobs(logits_v, 1.0, 0.8)
    kept = math.log(math.exp(2) + math.exp(1))
    assert nucleus[:2].tolist() == pytest.approx([2 - kept, 1 - kept]) and nucleus[2:].isinf().all()
