"""The memory arithmetic, term by term, against the formulas of REFERENCE.md §5 and arXiv 2205.05198."""

from __future__ import annotations

import math

import pytest

from fieldkit.capabilities.architecture import ModelArch
from fieldkit.capabilities.catalog import load_catalogue
from fieldkit.capabilities.layouts import Layout, LayoutSearch, term_share
from fieldkit.capabilities.memory import Term, engine_terms, learner_terms
from fieldkit.capabilities.request import PlanRequest

CATALOGUE = load_catalogue()
# GPT-3 175B, the model Korthikanti et al. tabulate: MHA, a plain 4h MLP, dropout on.
GPT3 = ModelArch(
    name="gpt3", hidden=12288, layers=96, heads=96, kv_heads=96, head_dim=128, ffn=4 * 12288, vocab=51200,
    mlp="plain", dropout=True,
)  # fmt: skip
S, B = 2048, 1


def terms(arch: ModelArch, **fields: object) -> dict[str, Term]:
    return {t.name: t for t in learner_terms(arch, PlanRequest.build(**fields))}


def state_bytes(found: dict[str, Term]) -> float:
    return sum(t.bytes for t in found.values() if t.kind in ("weights", "grads", "optimizer"))


def test_a_gpt_layer_stores_34sbh_plus_5as2b() -> None:
    found = terms(GPT3, method="full", seq=S, micro_batch=B, flash_attention=False)
    sbh = S * B * GPT3.hidden
    per_layer = sbh * (34 + 5 * GPT3.heads * S / GPT3.hidden)
    assert found["activations"].bytes == pytest.approx(GPT3.layers * per_layer, rel=1e-12)


def test_selective_recompute_and_flash_attention_drop_the_s2_term() -> None:
    sbh = S * B * GPT3.hidden
    selective = terms(GPT3, method="full", seq=S, flash_attention=False, recompute="selective")
    assert selective["activations"].bytes == pytest.approx(GPT3.layers * 34 * sbh, rel=1e-12)
    flash = terms(GPT3, method="full", seq=S)  # FlashAttention keeps its output and an fp32 logsumexp instead
    assert flash["activations"].bytes == pytest.approx(GPT3.layers * (34 * sbh + 4 * GPT3.heads * S * B), rel=1e-12)


def test_full_recompute_keeps_2sbh_per_layer_and_one_layer_in_flight() -> None:
    sbh = S * B * GPT3.hidden
    found = terms(GPT3, method="full", seq=S, flash_attention=False, recompute="full")
    assert found["activations (checkpoints)"].bytes == GPT3.layers * 2 * sbh
    one_layer = sbh * (34 + 5 * GPT3.heads * S / GPT3.hidden)
    assert found["recompute working set (one layer)"].bytes == pytest.approx(one_layer, rel=1e-12)


def test_modern_shapes_change_the_coefficient_where_they_should() -> None:
    sbh = S * B * GPT3.hidden
    base = terms(GPT3, method="full", seq=S)["activations"].bytes
    no_dropout = GPT3.model_copy(update={"dropout": False})
    assert base - terms(no_dropout, method="full", seq=S)["activations"].bytes == GPT3.layers * 2 * sbh  # 2 masks
    gqa = no_dropout.model_copy(update={"kv_heads": 8})  # K and V shrink from h to 8/96 h
    saved = (
        terms(no_dropout, method="full", seq=S)["activations"].bytes
        - terms(gqa, method="full", seq=S)["activations"].bytes
    )
    assert saved == pytest.approx(GPT3.layers * 4 * sbh * (1 - 8 / 96), rel=1e-12)
    gated = no_dropout.model_copy(update={"mlp": "gated"})  # SwiGLU keeps gate, up and their product: +2 x 2sbf
    grown = (
        terms(gated, method="full", seq=S)["activations"].bytes
        - terms(no_dropout, method="full", seq=S)["activations"].bytes
    )
    assert grown == pytest.approx(GPT3.layers * 4 * S * B * GPT3.ffn, rel=1e-12)


def test_lora_dropout_costs_a_copy_per_adapted_module() -> None:
    arch = CATALOGUE.model("qwen2.5-7b")
    none = terms(arch, method="lora", lora_dropout=0)["activations"].bytes
    dropped = terms(arch, method="lora", lora_dropout=0.05)["activations"].bytes
    h, q, f = arch.hidden, arch.q_dim, arch.ffn
    shared = 2 * (h + h + f)  # without dropout: one bf16 copy each of attention input, MLP input, down_proj input
    copies = (2 + 1) * (3 * h + q + 2 * h + f)  # a bf16 copy + 1-byte mask of the input of q,k,v, o, gate,up, down
    assert dropped - none == pytest.approx(arch.layers * S * (copies - shared), rel=1e-12)


def test_mixed_precision_adamw_is_16_bytes_per_parameter() -> None:
    arch = CATALOGUE.model("llama-3.1-8b")
    p = arch.param_counts().total
    assert state_bytes(terms(arch, method="full")) == 16 * p
    assert state_bytes(terms(arch, method="full", dtype="float32")) == 16 * p  # no master copy, fp32 grads
    eight_bit = state_bytes(terms(arch, method="full", optimizer="adamw8bit"))
    assert eight_bit == pytest.approx((2 + 2 + 4 + 2) * p, rel=1e-3)


def test_lora_adds_16_bytes_per_adapter_parameter_on_the_frozen_base() -> None:
    arch = CATALOGUE.model("qwen2.5-7b")
    found = terms(arch, method="lora")
    lora = arch.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert found["base weights (bfloat16, frozen)"].bytes == 2 * arch.param_counts().total
    assert state_bytes(found) - found["base weights (bfloat16, frozen)"].bytes == 16 * lora


def test_nf4_weights_with_their_quantisation_constants() -> None:
    arch = CATALOGUE.model("nemotron-class-100b")
    counts = arch.param_counts()
    double = terms(arch, method="qlora")
    single = terms(arch, method="qlora", double_quant=False)
    assert double["base weights (NF4, frozen)"].bytes == 0.5 * counts.linear
    assert double["NF4 quantisation constants"].bytes == pytest.approx(0.127 / 8 * counts.linear)
    assert single["NF4 quantisation constants"].bytes == pytest.approx(0.5 / 8 * counts.linear)
    unquantised = double["unquantised base (bfloat16: embeddings, norms)"].bytes
    assert unquantised == 2 * (counts.total - counts.linear)


def test_kv_cache_is_2_layers_kvheads_headdim_ctx_batch_bytes() -> None:
    arch = CATALOGUE.model("qwen2.5-7b")
    found = {t.name: t for t in engine_terms(arch, PlanRequest.build(rollout_batch=16, rollout_ctx=4096))}
    assert found["KV cache"].bytes == 2 * 28 * 4 * 128 * 4096 * 16 * 2
    fp8 = {t.name: t for t in engine_terms(arch, PlanRequest.build(rollout_batch=16, kv_dtype="fp8"))}
    assert fp8["KV cache"].bytes * 2 == found["KV cache"].bytes
    assert engine_terms(arch, PlanRequest.build()) == []  # no rollout batch, no engine


def test_a_hybrid_caches_keys_only_in_its_attention_blocks() -> None:
    nano = CATALOGUE.model("nemotron-nano-9b-v2")
    found = {t.name: t for t in engine_terms(nano, PlanRequest.build(rollout_batch=8, rollout_ctx=32768))}
    attention_kv = 2 * 4 * 8 * 128 * 32768 * 8 * 2
    assert attention_kv < found["KV cache"].bytes < attention_kv * 1.5  # plus fixed-size Mamba states
    dense_assumption = attention_kv * nano.layers / 4
    assert found["KV cache"].bytes < dense_assumption / 8


def test_zero_shards_per_gpu_as_in_the_reference() -> None:
    """ZeRO-1: 4P + 12P/N, ZeRO-2: 2P + 14P/N, ZeRO-3: 16P/N (mixed-precision AdamW, per GPU)."""
    arch = CATALOGUE.model("qwen2.5-14b")
    req = PlanRequest.build(method="full")
    search = LayoutSearch(arch, CATALOGUE.gpu("h100"), req, learner_terms(arch, req), [])
    p, n = arch.param_counts().total, 8
    expected = {0: 16 * p, 1: 4 * p + 12 * p / n, 2: 2 * p + 14 * p / n, 3: 16 * p / n}
    for zero, per_gpu in expected.items():
        fit = search.evaluate(Layout(1, 1, n, zero))
        states = sum(fit.per_gpu[t.name] for t in search.learner if t.kind in ("weights", "grads", "optimizer"))
        assert states == pytest.approx(per_gpu, rel=1e-12), zero


def test_tensor_and_pipeline_parallel_split_the_model() -> None:
    arch = CATALOGUE.model("llama-3.1-70b")
    weights = terms(arch, method="full")["weights (bfloat16)"]
    activations = terms(arch, method="full")["activations"]
    assert term_share(weights, arch, 8, 1) == weights.bytes / 8
    assert term_share(activations, arch, 8, 4) == activations.bytes / 8  # 1F1B: L layers' worth on stage one
    stage = math.ceil(80 / 3) / 80 * weights.layers_bytes + weights.edge_bytes / 2  # untied: one of embed / head
    assert term_share(weights, arch, 2, 3) == pytest.approx(stage / 2, rel=1e-12)


def test_gradients_on_demand_overlap_with_activations() -> None:
    arch = CATALOGUE.model("qwen2.5-0.5b")
    for grads in ("persistent", "on_demand"):
        req = PlanRequest.build(method="full", grads=grads)
        search = LayoutSearch(arch, CATALOGUE.gpu("h100"), req, learner_terms(arch, req), [])
        fit = search.evaluate(Layout(1, 1, 1, 0))
        by_kind = {kind: sum(v.bytes for v in search.learner if v.kind == kind) for kind in
                   ("weights", "grads", "optimizer", "activations", "transient")}  # fmt: skip
        static = by_kind["weights"] + by_kind["optimizer"] + 1e9  # + framework overhead
        forward = by_kind["activations"] + by_kind["transient"]
        if grads == "persistent":
            assert fit.peak_bytes == pytest.approx(static + by_kind["grads"] + forward)
        else:
            assert fit.peak_bytes == pytest.approx(static + max(by_kind["grads"], forward))
