"""The RAG and Q&A-SFT knobs: a `rag:` or `qa:` section beside the RunConfig sections of the same YAML (model, lora,
sft, paths, serve, resources), so one file configures the engine, the adapter training and the evaluation.

Errors name the dotted field, the value and what is allowed, as RunConfig's do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fieldkit.config import ConfigError, RunConfig, yaml_mapping
from fieldkit.rag.records import describe


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", description="the label in tables and lineage")
    retriever: Literal["bm25", "dense", "hybrid", "none"] = Field(
        "dense", description="none: the model answers from its weights alone"
    )
    rerank: bool = Field(False, description="order rag.candidates passages by the policy model's P(Yes), keep rag.k")
    adapter: bool = Field(False, description="answer with rag.adapter (a LoRA directory) instead of the base model")


DEFAULT_VARIANTS = [
    Variant(name="naive-rag", retriever="dense"),
    Variant(name="rerank-rag", retriever="hybrid", rerank=True),
    Variant(name="adapter+rag", retriever="dense", adapter=True),
    Variant(name="adapter", retriever="none", adapter=True),
]


class RagConfig(Section):
    corpus: Path | None = Field(None, description="passages JSONL; None: the embedded corpus (fieldkit/rag/data)")
    questions: Path | None = Field(None, description="questions JSONL; None: the embedded 48 held-out questions")
    limit: int | None = Field(None, ge=1, description="evaluate the first N questions only (smoke runs)")
    k: int = Field(3, ge=1, description="passages given to the model; hit@k is at this k (the field note's hit@3)")
    candidates: int = Field(10, ge=1, description="passages retrieved before reranking keeps the best k")
    variants: list[Variant] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1)
    adapter: Path | None = Field(None, description="LoRA directory of the adapter variants; None skips them")
    base_url: str | None = Field(None, description="an OpenAI-compatible endpoint; None starts `fieldkit serve`'s")
    model: str | None = Field(None, description="the base model's id at base_url; None: the first it lists")
    adapter_model: str | None = Field(None, description="the adapter's id at base_url; None: the served adapter")
    judge_base_url: str | None = Field(None, description="the judge's endpoint; None: the policy's endpoint")
    judge_model: str | None = Field(None, description="the judge's model id; None: the base model")
    api_key_env: str = Field("FIELDKIT_API_KEY", description="env var holding the endpoints' key, if they need one")
    max_tokens: int = Field(64, ge=1, description="answer length cap; the embedded answers are one or two sentences")
    relevance_questions: int = Field(2, ge=1, description="questions the judge writes back per answer (ragas: 3)")
    calibration_questions: int = Field(8, ge=1, description="questions whose right/wrong/unfaithful answers calibrate")
    agreement_threshold: float = Field(0.75, ge=0, le=1, description="a judge agreeing less is flagged in the report")
    parallel: int = Field(8, ge=1, description="question tasks in flight on Ray at once")
    task_retries: int = Field(2, ge=0, description="Ray retries of a failed question task; then it is reported failed")
    bootstrap: int = Field(2000, ge=1, description="bootstrap resamples for each mean's 95% interval")

    @model_validator(mode="after")
    def _candidates_cover_k(self) -> RagConfig:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be >= k ({self.k})")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {', '.join(names)}")
        return self


class QaConfig(Section):
    pairs: Path | None = Field(None, description="Q&A pairs JSONL; None: the embedded 240 pairs")
    holdout: float = Field(0.2, gt=0, lt=1, description="share of pairs held out for the before/after report")
    eval_limit: int | None = Field(None, ge=1, description="score only the first N held-out pairs (smoke runs)")
    max_tokens: int = Field(64, ge=1, description="reply cap when scoring; the embedded answers fit in 64 tokens")


S = TypeVar("S", bound=BaseModel)


def load_with_section(path: Path | None, name: str, kind: type[S], overrides: dict[str, Any]) -> tuple[RunConfig, S]:
    """(RunConfig from every other section, `kind` from section `name`); ConfigError naming `name.field = value`."""
    source = str(path) if path else "<defaults>"
    if path is None:
        data: dict[str, Any] = {}
    else:
        try:
            data = yaml_mapping(path.read_text(encoding="utf-8"), source)
        except OSError as exc:
            raise ConfigError(source, [f"cannot read file: {exc.strerror}"]) from exc
    section = {**(data.pop(name, None) or {}), **overrides}
    try:
        parsed = kind.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(source, [f"{name}.{describe(err)}" for err in exc.errors()]) from exc
    return RunConfig.from_data(data, source), parsed
