"""A model's shape, and what the planner derives from it: parameter counts, LoRA parameters, the linear modules.

A shape is either a catalogue entry (models.yaml) or a Hugging Face config.json. Parameter counts come from the
shape, so the split between embeddings, layers and LoRA targets is exact; a catalogue's published `params` is a
check on the shape, not an input to the arithmetic. Hybrid Mamba-Transformer models (Nemotron-H / Nano v2) carry
their block mix: only attention blocks hold a KV cache, only MLP blocks an MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from fieldkit.capabilities.errors import PlanInputError, from_validation

# The linear modules LoRA can target, by their Hugging Face names (in_proj/out_proj: Mamba-2 mixers).
KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj", "out_proj")
# Architectures whose MLP has two matrices (up/down) rather than SwiGLU's three.
PLAIN_MLP_TYPES = ("nemotron", "nemotron_h", "gpt2", "gpt_neox", "gpt_bigcode", "opt", "falcon", "phi")
PLAIN_MLP_ACTIVATIONS = ("relu2", "gelu_new", "gelu_fast")


class SsmSpec(BaseModel):
    """A Mamba-2 mixer: `layers` blocks of `heads` x `head_dim` channels with a `state`-wide scan."""

    model_config = ConfigDict(extra="forbid")
    layers: PositiveInt
    heads: PositiveInt
    head_dim: PositiveInt
    state: PositiveInt
    groups: PositiveInt = 1
    conv_kernel: PositiveInt = 4

    @property
    def inner(self) -> int:
        return self.heads * self.head_dim

    @property
    def in_proj_out(self) -> int:
        """in_proj emits x and z (inner each), B and C (groups x state each) and one dt per head."""
        return 2 * self.inner + 2 * self.groups * self.state + self.heads

    @property
    def conv_dim(self) -> int:
        return self.inner + 2 * self.groups * self.state


@dataclass(frozen=True)
class LinearModule:
    """One projection: `count` blocks each hold a `d_in` x `d_out` matrix; `group` names the shared input."""

    name: str
    d_in: int
    d_out: int
    count: int
    group: str


@dataclass(frozen=True)
class ParamCounts:
    embedding: int  # input embedding (V x h)
    lm_head: int  # output projection; 0 when tied to the embedding
    linear: int  # every projection matrix of every block
    other: int  # norms, biases, Mamba conv/scan parameters, the final norm

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.linear + self.other


class ModelArch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    hf_id: str | None = Field(None, description="the checkpoint these values come from")
    params: int | None = Field(None, gt=0, description="published parameter count, checked against the shape")
    hidden: PositiveInt
    layers: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    ffn: PositiveInt
    vocab: PositiveInt
    tied_embeddings: bool = False
    mlp: Literal["gated", "plain"] = "gated"
    qkv_bias: bool = False
    dropout: bool = Field(False, description="hidden/attention dropout active in training (GPT-era models)")
    attention_layers: PositiveInt | None = Field(None, description="blocks with attention; default: every layer")
    mlp_layers: PositiveInt | None = Field(None, description="blocks with an MLP; default: every layer")
    ssm: SsmSpec | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModelArch:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        for field in ("attention_layers", "mlp_layers"):
            value = getattr(self, field)
            if value is not None and value > self.layers:
                raise ValueError(f"{field} {value} exceeds layers {self.layers}")
        return self

    @property
    def n_attention(self) -> int:
        return self.attention_layers or self.layers

    @property
    def n_mlp(self) -> int:
        return self.mlp_layers or self.layers

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_modules(self) -> list[LinearModule]:
        h, f = self.hidden, self.ffn
        modules = [
            LinearModule("q_proj", h, self.q_dim, self.n_attention, "attn_in"),
            LinearModule("k_proj", h, self.kv_dim, self.n_attention, "attn_in"),
            LinearModule("v_proj", h, self.kv_dim, self.n_attention, "attn_in"),
            LinearModule("o_proj", self.q_dim, h, self.n_attention, "attn_out"),
        ]
        if self.mlp == "gated":
            modules.append(LinearModule("gate_proj", h, f, self.n_mlp, "mlp_in"))
        modules += [
            LinearModule("up_proj", h, f, self.n_mlp, "mlp_in"),
            LinearModule("down_proj", f, h, self.n_mlp, "mlp_out"),
        ]
        if self.ssm:
            modules += [
                LinearModule("in_proj", h, self.ssm.in_proj_out, self.ssm.layers, "ssm_in"),
                LinearModule("out_proj", self.ssm.inner, h, self.ssm.layers, "ssm_out"),
            ]
        return modules

    def param_counts(self) -> ParamCounts:
        h = self.hidden
        linear = sum(m.d_in * m.d_out * m.count for m in self.linear_modules())
        norms = h * (self.n_attention + self.n_mlp + (self.ssm.layers if self.ssm else 0)) + h  # + final norm
        biases = (self.q_dim + 2 * self.kv_dim) * self.n_attention if self.qkv_bias else 0
        ssm_other = 0
        if self.ssm:  # conv weight + bias, A_log, D, dt_bias, and the gated RMSNorm over the inner channels
            s = self.ssm
            ssm_other = s.layers * (s.conv_dim * (s.conv_kernel + 1) + 3 * s.heads + s.inner)
        embedding = self.vocab * h
        return ParamCounts(embedding, 0 if self.tied_embeddings else embedding, linear, norms + biases + ssm_other)

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """r * (d_in + d_out) per adapted matrix, summed over the blocks that hold it."""
        return sum(rank * (m.d_in + m.d_out) * m.count for m in self.adapted(targets))

    def adapted(self, targets: list[str]) -> list[LinearModule]:
        """The modules of this architecture that `targets` names (absent ones are skipped, as PEFT does)."""
        unknown = sorted(set(targets) - set(KNOWN_TARGETS))
        if unknown:
            raise PlanInputError("target_modules", f"unknown module(s) {unknown}; known: {', '.join(KNOWN_TARGETS)}")
        chosen = [m for m in self.linear_modules() if m.name in targets]
        if not chosen:
            present = sorted({m.name for m in self.linear_modules()})
            raise PlanInputError("target_modules", f"{targets} match no module of {self.name}; it has {present}")
        return chosen

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str, source: str = "config.json") -> ModelArch:
        """Read the shape from a Hugging Face config.json; a missing key is named with the file it was read from."""

        def need(*keys: str) -> Any:
            for key in keys:
                if config.get(key) is not None:
                    return config[key]
            raise PlanInputError(f"{source}: {keys[0]}", "missing; the planner needs the model's shape")

        hidden = int(need("hidden_size", "n_embd", "d_model"))
        heads = int(need("num_attention_heads", "n_head"))
        model_type = str(config.get("model_type", ""))
        activation = str(config.get("hidden_act") or config.get("mlp_hidden_act") or "")
        pattern = config.get("hybrid_override_pattern")
        layers = int(need("num_hidden_layers", "n_layer"))
        blocks: dict[str, Any] = {}
        if pattern:  # Nemotron-H: one character per block, M = Mamba-2, * = attention, - = MLP
            blocks = {"attention_layers": pattern.count("*") or None, "mlp_layers": pattern.count("-") or None}
            if pattern.count("M"):
                blocks["ssm"] = SsmSpec(
                    layers=pattern.count("M"),
                    heads=int(need("mamba_num_heads")),
                    head_dim=int(need("mamba_head_dim")),
                    state=int(need("ssm_state_size")),
                    groups=int(config.get("n_groups") or config.get("mamba_num_groups") or 1),
                    conv_kernel=int(config.get("conv_kernel", 4)),
                )
        dropout_keys = ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "hidden_dropout_prob")
        try:
            return cls(
                name=name,
                hf_id=config.get("_name_or_path") or None,
                hidden=hidden,
                layers=layers,
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or config.get("attention_head_dim") or hidden // heads),
                ffn=int(need("intermediate_size", "n_inner", "ffn_hidden_size")),
                vocab=int(need("vocab_size")),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                mlp="plain" if model_type in PLAIN_MLP_TYPES or activation in PLAIN_MLP_ACTIVATIONS else "gated",
                qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)),
                dropout=any(float(config.get(key) or 0) > 0 for key in dropout_keys),
                **blocks,
            )
        except ValidationError as exc:
            raise from_validation(source, exc) from exc
