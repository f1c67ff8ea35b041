"""Planner catalogues: the shipped hardware and models, shapes that reproduce published parameter counts, LoRA counts
from the reference, Hugging Face config.json input, user extensions, and errors that name what is known."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from fieldkit.capabilities.architecture import KNOWN_TARGETS, ModelArch
from fieldkit.capabilities.catalog import CATALOG_ENV, load_catalogue
from fieldkit.capabilities.errors import PlanInputError

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CATALOGUE = load_catalogue()
# NVIDIA-Nemotron-Nano-9B-v2's config.json (the fields the planner reads).
NEMOTRON_NANO_CONFIG = {
    "model_type": "nemotron_h",
    "num_hidden_layers": 56,
    "hidden_size": 4480,
    "intermediate_size": 15680,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 131072,
    "tie_word_embeddings": False,
    "mlp_hidden_act": "relu2",
    "hybrid_override_pattern": "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
    "mamba_num_heads": 128,
    "mamba_head_dim": 80,
    "ssm_state_size": 128,
    "n_groups": 8,
    "conv_kernel": 4,
}


def test_the_issue_hardware_is_there_with_its_memory() -> None:
    memory = {name: hw.memory_gb for name, hw in CATALOGUE.hardware.items()}
    assert memory == {
        "gb10": 128, "h100": 80, "h200": 141, "b200": 192, "a100-80": 80, "a100-40": 40, "l40s": 48, "rtx4090": 24,
    }  # fmt: skip
    assert CATALOGUE.gpu("gb10").unified_memory and not CATALOGUE.gpu("h100").unified_memory
    assert all(hw.bandwidth_gbs > 0 and hw.bf16_tflops > 0 and hw.interconnect for hw in CATALOGUE.hardware.values())


def test_the_issue_models_are_there() -> None:
    expected = {
        "qwen2.5-0.5b": 0.49, "qwen2.5-3b": 3.09, "qwen2.5-7b": 7.62, "qwen2.5-14b": 14.8, "qwen2.5-32b": 32.8,
        "qwen2.5-72b": 72.7, "llama-3.1-8b": 8.03, "llama-3.1-70b": 70.6, "llama-3.1-405b": 406,
        "nemotron-nano-9b-v2": 8.89, "llama-3.3-nemotron-super-49b": 49.9, "nemotron-class-100b": 101,
    }  # fmt: skip
    for name, billions in expected.items():
        assert CATALOGUE.model(name).param_counts().total / 1e9 == pytest.approx(billions, rel=0.01), name


@pytest.mark.parametrize("name", [n for n, m in CATALOGUE.models.items() if m.params], ids=str)
def test_shape_reproduces_the_published_parameter_count(name: str) -> None:
    arch = CATALOGUE.model(name)
    assert arch.param_counts().total == pytest.approx(arch.params, rel=1e-3)


def test_lora_counts_match_the_reference() -> None:
    qwen3b, qwen7b = CATALOGUE.model("qwen2.5-3b"), CATALOGUE.model("qwen2.5-7b")
    assert round(qwen3b.lora_params(16, SEVEN) / 1e6, 2) == 29.93
    assert round(qwen3b.lora_params(16, SEVEN) / qwen3b.param_counts().total * 100, 2) == 0.97  # reference: 0.96%
    assert round(qwen7b.lora_params(16, SEVEN) / 1e6, 1) == 40.4
    assert round(qwen7b.lora_params(16, SEVEN) / qwen7b.param_counts().total * 100, 2) == 0.53


def test_lora_count_is_rank_times_in_plus_out_per_adapted_matrix() -> None:
    arch = CATALOGUE.model("llama-3.1-8b")  # h 4096, q 4096, kv 1024, ffn 14336, 32 layers
    assert arch.lora_params(8, ["q_proj", "v_proj"]) == 32 * 8 * ((4096 + 4096) + (4096 + 1024))
    assert arch.lora_params(16, SEVEN) == 2 * arch.lora_params(8, SEVEN)


def test_hf_config_of_a_hybrid_reads_its_block_mix() -> None:
    arch = ModelArch.from_hf_config(NEMOTRON_NANO_CONFIG, name="nano")
    shipped = CATALOGUE.model("nemotron-nano-9b-v2")
    assert (arch.n_attention, arch.n_mlp, arch.ssm.layers if arch.ssm else 0) == (4, 25, 27)
    assert arch.mlp == "plain" and arch.param_counts() == shipped.param_counts()
    assert arch.lora_params(16, SEVEN) == shipped.lora_params(16, SEVEN)


def test_hf_config_of_the_tiny_model_counts_what_its_safetensors_hold(tiny_model_dir: Path) -> None:
    arch = CATALOGUE.model(str(tiny_model_dir))
    raw = (tiny_model_dir / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    stored = 0
    for name, meta in header.items():
        if name != "__metadata__":
            size = 1
            for dim in meta["shape"]:
                size *= dim
            stored += size
    assert arch.tied_embeddings and arch.qkv_bias
    assert arch.param_counts().total == stored


def test_an_hf_id_names_its_architecture() -> None:
    assert CATALOGUE.model("Qwen/Qwen2.5-7B-Instruct").name == "qwen2.5-7b"
    assert CATALOGUE.model("meta-llama/Llama-3.1-70B-Instruct").name == "llama-3.1-70b"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(PlanInputError) as gpu:
        CATALOGUE.gpu("h800")
    assert gpu.value.field == "gpu" and "'h800'" in str(gpu.value) and "h100" in str(gpu.value)
    with pytest.raises(PlanInputError) as model:
        CATALOGUE.model("mistral-7b")
    assert model.value.field == "model" and "qwen2.5-7b" in str(model.value) and "config.json" in str(model.value)


def test_unknown_lora_target_lists_the_known_modules() -> None:
    with pytest.raises(PlanInputError) as info:
        CATALOGUE.model("qwen2.5-7b").lora_params(16, ["q_proj", "qkv"])
    assert info.value.field == "target_modules" and "'qkv'" in str(info.value)
    assert all(name in str(info.value) for name in KNOWN_TARGETS)


def test_a_user_file_adds_and_overrides_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "hardware:\n"
        "  mi300x: {label: AMD MI300X, memory_gb: 192, bandwidth_gbs: 5300, interconnect: Infinity Fabric,\n"
        "           interconnect_gbs: 448, bf16_tflops: 1307}\n"
        "  h100: {label: H100 NVL, memory_gb: 94, bandwidth_gbs: 3900, interconnect: NVLink bridge,\n"
        "         interconnect_gbs: 600, bf16_tflops: 835, gpus_per_node: 2}\n"
    )
    extended = load_catalogue([mine])
    assert extended.gpu("MI300X").memory_gb == 192 and extended.gpu("h100").memory_gb == 94
    assert set(CATALOGUE.hardware) < set(extended.hardware)
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": {"my-1b": {**CATALOGUE.model("qwen2.5-0.5b").model_dump(), "layers": 48}}}))
    monkeypatch.setenv(CATALOG_ENV, str(models))
    assert load_catalogue().model("my-1b").layers == 48


def test_a_bad_user_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hardware:\n  tiny-gpu: {label: x, memory_gb: -8, bandwidth_gbs: 1, interconnect: x, "
                   "interconnect_gbs: 1, bf16_tflops: 1}\n")  # fmt: skip
    with pytest.raises(PlanInputError) as info:
        load_catalogue([bad])
    assert str(bad) in info.value.field and info.value.field.endswith("hardware.tiny-gpu.memory_gb")
    assert "-8" in str(info.value)
    bad.write_text("gpus:\n  x: {}\n")
    with pytest.raises(PlanInputError, match="'hardware' and/or 'models'"):
        load_catalogue([bad])
    with pytest.raises(PlanInputError, match="cannot read"):
        load_catalogue([tmp_path / "missing.yaml"])


def test_a_config_json_without_a_needed_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10}))
    with pytest.raises(PlanInputError) as info:
        CATALOGUE.model(str(config))
    assert info.value.field == f"{config}: hidden_size"
    config.write_text(json.dumps({**NEMOTRON_NANO_CONFIG, "num_key_value_heads": 7}))
    with pytest.raises(PlanInputError, match="not a multiple of kv_heads"):
        CATALOGUE.model(str(config))
