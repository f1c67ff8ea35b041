"""Adapter bookkeeping of the policy server without an engine: directory checks, versions, eviction, the probe
comparison and the load figures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldkit.generation import AdapterRejectedError, LoadedAdapter, UnknownAdapterError
from fieldkit.training.probe import check_probe
from fieldkit.training.records import AdapterProbe, AdapterRef
from services.policy.adapters import AdapterRegistry, ServingVersion, inspect_adapter_dir
from services.policy.stats import ServerStats


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterRef:
    from fieldkit.training.random_adapter import build_random_adapter

    return build_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "a", rank=8, seed=1)


def test_a_fresh_adapter_passes_inspection_and_carries_a_discriminative_probe(adapter: AdapterRef) -> None:
    inspect_adapter_dir(adapter, max_lora_rank=64)
    probe = adapter.probe
    assert probe is not None and len(probe.logprobs) == len(probe.continuation_token_ids) > 10
    assert probe.continuation_token_ids[-1] == 2  # <|im_end|> closes the probe reply
    assert all(lp < 0 for lp in probe.logprobs)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "adapter_model.safetensors").unlink(), "cannot read adapter weights"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x05"), "shorter than a header"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"x" * 16), "not valid JSON"),
        (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "IA3", "r": 8}'), "not a PEFT LoRA"),
        (lambda d: (d / "adapter_config.json").unlink(), "cannot read"),
    ],
)
def test_damaged_adapter_dirs_are_refused_naming_the_file(
    adapter: AdapterRef, tmp_path: Path, damage: Callable[[Path], object], reason: str
) -> None:
    target = tmp_path / "copy"
    shutil.copytree(adapter.path, target)
    damage(target)
    with pytest.raises(AdapterRejectedError, match=reason):
        inspect_adapter_dir(adapter.model_copy(update={"path": str(target)}), max_lora_rank=64)


def test_rank_is_checked_against_the_engine_and_the_ref(adapter: AdapterRef, tmp_path: Path) -> None:
    with pytest.raises(AdapterRejectedError, match=r"r=8 exceeds the engine's lora\.max_lora_rank=1"):
        inspect_adapter_dir(adapter, max_lora_rank=1)
    target = tmp_path / "wide"
    shutil.copytree(adapter.path, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, "r": 32}))
    with pytest.raises(AdapterRejectedError, match="r=32 but the AdapterRef says 8"):
        inspect_adapter_dir(adapter.model_copy(update={"path": str(target)}), max_lora_rank=64)


def version(registry: AdapterRegistry, name: str, number: int) -> ServingVersion:
    ref = AdapterRef(name=name, version=number, path=f"/adapters/{name}/{number}", rank=8)
    lora = registry.new_lora(ref)
    info = LoadedAdapter(
        name=name, version=number, lora_id=lora.lora_id, path=ref.path, rank=8, probe=None, load_s=0, verify_s=0
    )
    return ServingVersion(info, lora)


def test_registry_serves_the_newest_and_unloads_old_versions_once_drained() -> None:
    registry = AdapterRegistry(keep_versions=2)
    v1 = version(registry, "policy", 1)
    assert registry.add(v1) == []
    held = registry.acquire("policy")  # a generation on v1 is in flight
    assert held is v1
    assert registry.add(version(registry, "policy", 2)) == []
    assert registry.add(version(registry, "policy", 3)) == []  # v1 pushed out, but still in flight
    assert registry.acquire("policy").info.version == 3
    assert registry.release(held) == [v1]  # its last request finished: unload now
    v4 = version(registry, "policy", 4)
    assert [v.info.version for v in registry.add(v4)] == [2]  # nobody on v2: unloaded at once
    assert registry.newest() == {"policy": 4}
    assert sorted(a.version for a in registry.loaded()) == [3, 4]
    assert len({a.lora_id for a in registry.loaded()} | {v1.lora.lora_id}) == 3  # ids never reused


def test_removing_a_name_unloads_its_idle_versions_now_and_busy_ones_once_drained() -> None:
    registry = AdapterRegistry(keep_versions=2)
    v1, v2 = version(registry, "run-v1", 1), version(registry, "run-v1", 2)
    registry.add(v1)
    registry.add(v2)
    registry.add(version(registry, "run-v2", 2))
    held = registry.acquire("run-v1")  # v2 of that name is in flight
    assert registry.remove("run-v1") == [v1]
    assert registry.newest() == {"run-v2": 2}
    with pytest.raises(UnknownAdapterError, match="'run-v1' is not loaded"):
        registry.acquire("run-v1")
    assert registry.release(held) == [v2]
    assert registry.remove("never-loaded") == []


def test_registry_refuses_unknown_names_and_stale_versions() -> None:
    registry = AdapterRegistry(keep_versions=1)
    with pytest.raises(UnknownAdapterError, match="none loaded"):
        registry.acquire("policy")
    registry.add(version(registry, "policy", 5))
    with pytest.raises(AdapterRejectedError, match="v5 is not newer than the serving v5"):
        registry.check_newer(AdapterRef(name="policy", version=5, path="/x", rank=8))
    with pytest.raises(UnknownAdapterError, match=r"serving: policy"):
        registry.acquire("other")


def test_probe_check_uses_the_mean_and_knows_when_it_cannot_discriminate() -> None:
    probe = AdapterProbe(prompt_token_ids=[1], continuation_token_ids=[4, 5, 6, 7], logprobs=[-1.0, -2.0, -3.0, -4.0])
    near = check_probe(probe, [-1.01, -2.02, -2.97, -4.0], [-2.0, -1.0, -4.0, -3.0], tolerance=0.05)
    assert near.passed and near.distinguishable_from_base
    assert near.mean_abs_diff == pytest.approx(0.015) and near.max_abs_diff == pytest.approx(0.03)
    far = check_probe(probe, [-1.5, -2.5, -3.5, -4.5], [-1.0, -2.0, -3.0, -4.0], tolerance=0.05)
    assert not far.passed and not far.distinguishable_from_base
    with pytest.raises(ValueError, match="probe has 4 log-probs"):
        check_probe(probe, [-1.0], [-1.0], tolerance=0.05)
    with pytest.raises(ValueError, match="3 log-probs for 4 continuation tokens"):
        AdapterProbe(prompt_token_ids=[1], continuation_token_ids=[4, 5, 6, 7], logprobs=[-1.0, -2.0, -3.0])


def test_load_figures_over_the_window() -> None:
    now = [0.0]
    stats = ServerStats(window_s=10.0, clock=lambda: now[0])
    stats.started()
    now[0] = 2.0
    stats.started()
    now[0] = 4.0
    stats.finished(30)
    assert stats.in_flight == 1 and stats.busy_fraction() == pytest.approx(0.4)
    now[0] = 5.0
    stats.finished(20)
    assert stats.tokens_per_s() == pytest.approx(5.0) and stats.busy_fraction() == pytest.approx(0.5)
    now[0] = 14.5  # the first request finished 10.5 s ago: out of the window, the second (at 5.0) still in
    assert stats.tokens_per_s() == pytest.approx(2.0) and stats.busy_fraction() == pytest.approx(0.05)
    now[0] = 30.0
    assert stats.tokens_per_s() == 0 and stats.busy_fraction() == 0 and stats.tokens_total == 50
