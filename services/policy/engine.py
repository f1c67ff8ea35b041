"""The engine interface behind the policy server, and the factory that picks an implementation.

An engine generates and scores token ids, with or without one LoRA adapter per request, and loads and unloads
adapters by an integer id that the server never reuses. Everything above that — which version of which adapter
name serves, probe verification, input checks, eviction, metrics — is the server's, shared by every engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fieldkit.config import LoraConfig, ModelConfig
from fieldkit.generation import GenerateDelta, GenerateRequest, GenerateResult, join_deltas


@dataclass(frozen=True)
class EngineLora:
    lora_id: int  # unique for the engine's lifetime: a new id per adapter version
    key: str  # readable unique name, "<adapter>@v<version>#<lora_id>"
    path: str


class Engine(ABC):
    """One model, served. Requests may run concurrently; implementations serialise what they must."""

    def __init__(self, model_dir: str, model: ModelConfig, lora: LoraConfig, gpu_fraction: float) -> None:
        self.model_dir = model_dir
        self.model = model
        self.lora = lora
        self.gpu_fraction = gpu_fraction
        self.dtype = model.resolved_dtype(on_gpu=gpu_fraction > 0)

    @abstractmethod
    async def start(self) -> None:
        """Load the model and warm it up, so the first request is served at full speed."""

    @property
    @abstractmethod
    def tokenizer(self) -> Any:
        """The model's transformers tokenizer (chat template included)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Rows of the embedding: valid token ids are below it."""

    @abstractmethod
    def stream(
        self, prompt_ids: list[int], request: GenerateRequest, max_tokens: int, lora: EngineLora | None
    ) -> AsyncIterator[GenerateDelta]:
        """Sample a reply to `prompt_ids` (already checked against vocab and context), yielding pieces as the tokens
        are sampled; closing or cancelling the iterator stops the request and frees its place in the engine."""

    async def generate(
        self, prompt_ids: list[int], request: GenerateRequest, max_tokens: int, lora: EngineLora | None
    ) -> GenerateResult:
        """The whole reply at once (adapter fields left unset); engines with a cheaper path override it."""
        return join_deltas([d async for d in self.stream(prompt_ids, request, max_tokens, lora)])

    @abstractmethod
    def running_requests(self) -> int:
        """Requests the engine holds now, running or waiting."""

    @abstractmethod
    async def score(self, prompt_ids: list[int], continuation_ids: list[int], lora: EngineLora | None) -> list[float]:
        """Teacher-forced log-prob of each continuation token given everything before it."""

    @abstractmethod
    async def add_lora(self, lora: EngineLora) -> None:
        """Load the adapter at `lora.path`; raise on any failure, leaving the engine serving as before."""

    @abstractmethod
    async def remove_lora(self, lora: EngineLora) -> None:
        """Unload an adapter no request uses any more."""

    @abstractmethod
    async def check_health(self) -> None:
        """Raise if the engine can no longer serve."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Release the engine's processes and memory."""


def create_engine(model_dir: str, model: ModelConfig, lora: LoraConfig, gpu_fraction: float) -> Engine:
    if model.engine == "vllm":
        from services.policy.vllm_engine import VllmEngine

        return VllmEngine(model_dir, model, lora, gpu_fraction)
    from services.policy.hf_engine import HfEngine

    return HfEngine(model_dir, model, lora, gpu_fraction)
