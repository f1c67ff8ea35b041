"""Memory arithmetic, one named term at a time (REFERENCE.md §5), for the learner and for the rollout engine.

Every term is whole-model bytes for one replica; the layout decides how each kind is sharded. Bytes per parameter:
fp32 4, bf16/fp16 2, NF4 0.5 plus its quantisation constants (0.5 bit/param with fp32 absmax per 64-block, 0.127
with double quantisation). Mixed-precision AdamW keeps an fp32 master copy and fp32 m and v: 2 + 2 + 12 = 16 B/param.

Activations follow Korthikanti et al. (arXiv 2205.05198), written per tensor so that the same code gives their
34*s*b*h + 5*a*s^2*b for a GPT layer and the right figure for GQA, SwiGLU (f != 4h), hybrid Mamba blocks, LoRA's
dropped-out input copies and Hugging Face's eager RMSNorm. tests/test_capabilities_memory.py pins the GPT case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fieldkit.capabilities.architecture import ModelArch
from fieldkit.capabilities.request import PlanRequest

Kind = Literal["weights", "grads", "optimizer", "activations", "transient", "engine"]
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.5
ADAM_8BIT_BLOCK = 2048  # bitsandbytes keeps one fp32 absmax per 2048 values of m and of v
KV_CACHE = "KV cache"  # the one engine term that splits over at most kv_heads tensor-parallel ranks
ENGINE_CHUNK_TOKENS = 8192  # vLLM's max_num_batched_tokens: the prefill chunk its profiling run sizes for


@dataclass(frozen=True)
class Term:
    """`layers_bytes` lives in the transformer blocks (pipeline stages split it); `edge_bytes` in the embedding,
    the LM head and the final norm. `pipeline_split` is False for activations: with 1F1B the first stage keeps
    `pp` micro-batches of L/pp layers in flight, the activations of all L layers for one micro-batch."""

    name: str
    kind: Kind
    layers_bytes: float
    edge_bytes: float
    formula: str
    pipeline_split: bool = True

    @property
    def bytes(self) -> float:
        return self.layers_bytes + self.edge_bytes


def count(n: float) -> str:
    return f"{n / 1e9:.3g}B" if n >= 1e8 else f"{n / 1e6:.3g}M"


def optimizer_bytes_per_param(req: PlanRequest) -> tuple[float, str]:
    master = 0 if req.dtype == "float32" else 4  # fp32 weights are their own master copy
    if req.optimizer == "adamw":
        states, what = 8.0, "fp32 m, v"
    else:
        states, what = 2 + 8 / ADAM_8BIT_BLOCK, "8-bit m, v + absmax"
    label = f"{'fp32 master + ' if master else ''}{what}"
    return master + states, label


def learner_terms(arch: ModelArch, req: PlanRequest) -> list[Term]:
    """Weights, gradients, optimizer states, activations and the loss's buffers of one learner replica."""
    req = req.resolved()
    counts = arch.param_counts()
    edge_params = counts.embedding + counts.lm_head + arch.hidden  # + final norm
    layer_params = counts.total - edge_params
    b = DTYPE_BYTES[req.dtype]
    opt, opt_label = optimizer_bytes_per_param(req)
    terms: list[Term] = []
    if req.method == "full":
        p = count(counts.total)
        terms += [
            Term(f"weights ({req.dtype})", "weights", b * layer_params, b * edge_params, f"{b} B x {p}"),
            Term(f"gradients ({req.dtype})", "grads", b * layer_params, b * edge_params, f"{b} B x {p}"),
            Term(f"optimizer ({opt_label})", "optimizer", opt * layer_params, opt * edge_params, f"{opt:g} B x {p}"),
        ]
    else:
        terms += base_weight_terms(arch, req, layer_params, edge_params)
        lora = arch.lora_params(req.rank, req.target_modules)
        share = f"r={req.rank} on {len(arch.adapted(req.target_modules))} module kinds: {count(lora)}"
        terms += [
            Term("LoRA adapters", "weights", b * lora, 0, f"{b} B x {count(lora)} ({share})"),
            Term("LoRA gradients", "grads", b * lora, 0, f"{b} B x {count(lora)}"),
            Term(f"LoRA optimizer ({opt_label})", "optimizer", opt * lora, 0, f"{opt:g} B x {count(lora)}"),
        ]
    return terms + activation_terms(arch, req)


def base_weight_terms(arch: ModelArch, req: PlanRequest, layer_params: int, edge_params: int) -> list[Term]:
    """The frozen base under LoRA: in the training dtype, or (QLoRA) NF4 for every projection matrix."""
    b = DTYPE_BYTES[req.dtype]
    if req.method == "lora":
        p = count(layer_params + edge_params)
        return [
            Term(f"base weights ({req.dtype}, frozen)", "weights", b * layer_params, b * edge_params, f"{b} B x {p}")
        ]
    linear = arch.param_counts().linear
    bits = 0.127 if req.double_quant else 0.5
    kept = layer_params - linear
    return [
        Term("base weights (NF4, frozen)", "weights", NF4_BYTES * linear, 0, f"0.5 B x {count(linear)} projections"),
        Term("NF4 quantisation constants", "weights", bits / 8 * linear, 0, f"{bits} bit x {count(linear)}"),
        Term(
            f"unquantised base ({req.dtype}: embeddings, norms)",
            "weights",
            b * kept,
            b * edge_params,
            f"{b} B x {count(kept + edge_params)}",
        ),
    ]


def activation_terms(arch: ModelArch, req: PlanRequest) -> list[Term]:
    req = req.resolved()
    tokens = req.seq * req.micro_batch
    e = req.act_bytes
    blocks = block_bytes_per_token(arch, req)
    ssm_layers = arch.ssm.layers if arch.ssm else 0
    per_token = blocks["attention"] * arch.n_attention + blocks["mlp"] * arch.n_mlp + blocks["ssm"] * ssm_layers
    s2 = blocks["attention_s2"] * arch.n_attention
    shape = f"s={req.seq} b={req.micro_batch}"
    terms: list[Term] = []
    if req.recompute == "full":
        # Gradient checkpointing keeps each layer's input, and recomputes one layer at a time in backward.
        attention = blocks["attention"] + blocks["attention_s2"]
        hybrid = arch.ssm is not None or arch.n_attention != arch.layers or arch.n_mlp != arch.layers
        largest = max(attention, blocks["mlp"], blocks["ssm"]) if hybrid else attention + blocks["mlp"]
        terms += [
            Term(
                "activations (checkpoints)",
                "activations",
                e * arch.hidden * tokens * arch.layers,
                0,
                f"{e} B x s*b*h per layer x {arch.layers} layers ({shape})",
                pipeline_split=False,
            ),
            Term(
                "recompute working set (one layer)",
                "activations",
                largest * tokens,
                0,
                f"{largest / arch.hidden:.1f} x s*b*h bytes ({shape}, {kernels_label(req)})",
                pipeline_split=False,
            ),
        ]
    else:
        stored = per_token + (s2 if req.recompute == "none" else 0)
        coefficient = stored / arch.hidden / arch.layers
        terms.append(
            Term(
                "activations",
                "activations",
                stored * tokens,
                0,
                f"{coefficient:.1f} x s*b*h bytes per layer x {arch.layers} layers ({shape}, {kernels_label(req)})",
                pipeline_split=False,
            )
        )
    final = (norm_bytes(req) + (e if req.method == "full" else 0)) * arch.hidden * tokens
    logits = tokens * arch.vocab
    terms += [
        Term(
            "logits + log-softmax",
            "activations",
            0,
            final + (e + 4) * logits,
            f"({e} + 4 fp32) B x s*b*V ({count(logits)}) + final norm",
            pipeline_split=False,
        ),
        Term(
            "loss backward buffers",
            "transient",
            0,
            8 * logits,
            "8 B x s*b*V: fp32 gradients of the log-softmax and of its input",
            pipeline_split=False,
        ),
    ]
    return terms


def kernels_label(req: PlanRequest) -> str:
    attention = "flash" if req.flash_attention else "materialised s^2 attention"
    return f"{req.kernels} norms, {attention}"


def norm_bytes(req: PlanRequest) -> float:
    """Bytes per element a norm stores besides its output: fused keeps its input; HF's eager RMSNorm keeps an fp32
    copy of the input and (when its weight trains) the normalised tensor."""
    if req.kernels == "fused":
        return req.act_bytes
    return 4 + (req.act_bytes if req.method == "full" else 0)


def block_bytes_per_token(arch: ModelArch, req: PlanRequest) -> dict[str, float]:
    """Bytes stored for backward per token by one attention, MLP and SSM block (attention_s2: the s^2 part)."""
    e = req.act_bytes
    h, f = arch.hidden, arch.ffn
    mask = req.mask_bytes if arch.dropout else 0  # a dropout mask on each block's output
    norm = norm_bytes(req) * h

    adapted = {m.name for m in arch.adapted(req.target_modules)} if req.uses_lora else set()

    def linear_inputs(group: str, width: int, shared_with_output: bool = False) -> float:
        """What the projections reading one input keep: the input (full FT, or LoRA without dropout), or each
        adapted module's own dropped-out copy plus its mask (PEFT applies dropout per module)."""
        names = [m.name for m in arch.linear_modules() if m.group == group]
        if req.method == "full" or (adapted & set(names) and req.lora_dropout == 0):
            return 0 if shared_with_output else e * width
        return sum((e + req.mask_bytes) * width for n in names if n in adapted) if req.lora_dropout > 0 else 0

    flash = req.flash_attention
    q_k_v = e * (arch.q_dim + 2 * arch.kv_dim)
    core = q_k_v + (e * arch.q_dim + 4 * arch.heads if flash else 0)  # flash keeps its output and fp32 logsumexp
    attention = norm + linear_inputs("attn_in", h) + core + linear_inputs("attn_out", arch.q_dim, flash) + mask * h
    s2 = 0.0 if flash else arch.heads * req.seq * (e + (req.mask_bytes + e if arch.dropout else 0))
    gated = arch.mlp == "gated"
    mlp_core = e * f * (3 if gated else 1)  # gate/up outputs and the activation's output, or fc1's output
    mlp = norm + linear_inputs("mlp_in", h) + mlp_core + linear_inputs("mlp_out", f) + mask * h
    ssm = 0.0
    if arch.ssm:  # approximation: projection outputs, conv output and scan output; scan internals not counted
        s = arch.ssm
        ssm = norm + linear_inputs("ssm_in", h) + e * (s.in_proj_out + s.conv_dim + s.inner)
        ssm += linear_inputs("ssm_out", s.inner)
    return {"attention": attention, "attention_s2": s2, "mlp": mlp, "ssm": ssm}


def engine_terms(arch: ModelArch, req: PlanRequest) -> list[Term]:
    """The rollout engine (vLLM): its own copy of the weights, adapter slots, KV cache and a prefill workspace."""
    req = req.resolved()
    if req.rollout_batch == 0:
        return []
    counts = arch.param_counts()
    b = DTYPE_BYTES[req.dtype]
    if req.method == "qlora":  # the engine serves the same NF4 base (vLLM's bitsandbytes loader)
        bits = 0.127 if req.double_quant else 0.5
        weights = counts.linear * (NF4_BYTES + bits / 8) + (counts.total - counts.linear) * b
        w_formula = f"NF4 projections + {b} B rest of {count(counts.total)}"
    else:
        weights = b * counts.total
        w_formula = f"{b} B x {count(counts.total)}"
    terms = [Term("engine weights", "engine", weights, 0, w_formula)]
    if req.uses_lora:
        slot_rank = req.engine_max_lora_rank or req.rank
        slots = req.engine_max_loras * b * arch.lora_params(slot_rank, req.target_modules)
        formula = f"{req.engine_max_loras} adapters at r={slot_rank} x {b} B/param"
        terms.append(Term("engine LoRA slots", "engine", slots, 0, formula))
    kv_b = 1 if req.kv_dtype == "fp8" else b
    seqs = req.rollout_batch * req.rollout_ctx
    kv = 2 * arch.n_attention * arch.kv_heads * arch.head_dim * seqs * kv_b
    kv_formula = (
        f"2 x {arch.n_attention} layers x {arch.kv_heads} kv heads x {arch.head_dim} x {seqs} tokens x {kv_b} B"
    )
    if arch.ssm:  # Mamba keeps a fixed fp32 scan state and a conv window per sequence instead of a growing cache
        s = arch.ssm
        kv += req.rollout_batch * s.layers * (s.inner * s.state * 4 + s.conv_dim * (s.conv_kernel - 1) * b)
        kv_formula += " + Mamba states"
    terms.append(Term(KV_CACHE, "engine", kv, 0, kv_formula))
    chunk = min(ENGINE_CHUNK_TOKENS, seqs)
    width = arch.hidden + arch.q_dim + 2 * arch.kv_dim + 3 * arch.ffn
    workspace = chunk * width * b + req.rollout_batch * arch.vocab * 4
    terms.append(
        Term("engine prefill workspace", "engine", workspace, 0, f"{chunk} tokens x (h+qkv+3f) x {b} B + fp32 logits")
    )
    return terms
