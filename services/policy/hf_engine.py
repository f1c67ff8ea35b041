"""transformers + PEFT: the engine for machines where vLLM cannot run. Same contract, one request at a time.

Decoding is our own loop over the KV cache, so the sampled tokens' log-probs are exactly those of the distribution
that sampled them (after temperature and top-p, as vLLM's processed log-probs; fieldkit.generation) and each request
samples from its own seeded generator. Adapters live in one
PeftModel under unique names; a request activates its adapter (or disables adapters for the base model) under the
lock that serialises all model work.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fieldkit.generation import SAMPLING_EPS, GenerateDelta, GenerateRequest, logprob_temperature
from services.policy.engine import Engine, EngineLora


class HfEngine(Engine):
    _model: Any = None
    _peft: Any = None  # the PeftModel wrapping _model, once the first adapter is loaded

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        self._running = 0
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(self.model_dir)
        # A GPU share means a GPU; on a CPU-only machine (the fallback's home) everything stays on the CPU.
        self._device = "cuda" if self.gpu_fraction > 0 and torch.cuda.is_available() else "cpu"
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, self.dtype))
        self._model = model.to(self._device).eval()
        configured = self._model.generation_config.eos_token_id
        eos = configured if isinstance(configured, list) else [configured]
        self._eos = {t for t in [*eos, self._tokenizer.eos_token_id] if t is not None}

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self._model.config.vocab_size)

    @contextmanager
    def _serving(self, lora: EngineLora | None) -> Iterator[Any]:
        """The model with `lora` active (None: the base model, adapters disabled), without grad."""
        import torch

        with torch.no_grad():
            if self._peft is None:
                yield self._model
            elif lora is None:
                with self._peft.disable_adapter():
                    yield self._peft
            else:
                self._peft.set_adapter(lora.key)
                yield self._peft

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def stream(
        self, prompt_ids: list[int], request: GenerateRequest, max_tokens: int, lora: EngineLora | None
    ) -> AsyncIterator[GenerateDelta]:
        """The decoding loop runs in a thread under the model lock and hands each piece to this coroutine (a
        streamer); closing or cancelling the iterator tells the loop to stop at its next token."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[GenerateDelta | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: GenerateDelta | BaseException | None) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, item)

        def run() -> None:
            try:
                for piece in self._decode(prompt_ids, request, max_tokens, lora, stop):
                    put(piece)
                put(None)
            except BaseException as exc:  # the reader re-raises it
                put(exc)

        async with self._lock:
            self._running += 1
            worker = loop.run_in_executor(None, run)
            try:
                while (item := await pieces.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                await asyncio.shield(worker)  # the model is free again only once the loop has let go of it
                self._running -= 1

    def running_requests(self) -> int:
        return self._running

    def _decode(
        self,
        prompt_ids: list[int],
        request: GenerateRequest,
        max_tokens: int,
        lora: EngineLora | None,
        stop: threading.Event,
    ) -> Iterator[GenerateDelta]:
        """One piece per sampled token; text is released once no stop string can still start in it, and a reply
        cut at a stop string ends there."""
        import torch

        generator = torch.Generator(device=self._device)
        if request.seed is None:
            generator.seed()
        else:
            generator.manual_seed(request.seed)
        token_ids: list[int] = []
        finish: Literal["stop", "length"] = "length"
        hold = max((len(s) for s in request.stop), default=1) - 1  # characters a stop string could still claim
        sent = 0  # characters of the reply already yielded
        first = True
        with self._serving(lora) as model:
            out = model(input_ids=torch.tensor([prompt_ids], device=self._device), use_cache=True)
            for _ in range(max_tokens):
                if stop.is_set():
                    return
                logits_v = out.logits[0, -1].float()
                logp_v = _sampling_logprobs(logits_v, request.temperature, request.top_p)
                token = _sample(logits_v, logp_v, request.temperature, generator)
                token_ids.append(token)
                top = None
                if request.top_logprobs:
                    values, ids = logp_v.topk(request.top_logprobs)
                    top = [dict(zip(ids.tolist(), values.tolist(), strict=True))]
                text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
                cut = min((i for i in (text.find(s) for s in request.stop) if i >= 0), default=-1)
                done = token in self._eos or cut >= 0 or len(token_ids) == max_tokens
                if done:
                    finish = "stop" if token in self._eos or cut >= 0 else finish
                    upto = cut if cut >= 0 else len(text)
                else:  # a split multi-byte character, or the start of a stop string, waits for more tokens
                    upto = len(text.rstrip("\ufffd")) - hold
                piece = text[sent:upto] if upto > sent else ""
                sent = max(sent, upto)
                yield GenerateDelta(
                    token_ids=[token],
                    text=piece,
                    logprobs=[float(logp_v[token])],
                    top_logprobs=top,
                    finish_reason=finish if done else None,
                    prompt_token_ids=prompt_ids if first else None,
                )
                first = False
                if done:
                    return
                step = torch.tensor([[token]], device=self._device)
                out = model(input_ids=step, past_key_values=out.past_key_values, use_cache=True)

    async def score(self, prompt_ids: list[int], continuation_ids: list[int], lora: EngineLora | None) -> list[float]:
        return await self._run(self._score, prompt_ids, continuation_ids, lora)

    def _score(self, prompt_ids: list[int], continuation_ids: list[int], lora: EngineLora | None) -> list[float]:
        from fieldkit.training.logprobs import continuation_logprobs

        with self._serving(lora) as model:
            return continuation_logprobs(model, prompt_ids, continuation_ids)

    async def add_lora(self, lora: EngineLora) -> None:
        await self._run(self._add_lora, lora)

    def _add_lora(self, lora: EngineLora) -> None:
        from peft import PeftConfig, PeftModel

        if self._peft is None:
            config = PeftConfig.from_pretrained(lora.path)
            config.inference_mode = True
            self._peft = PeftModel(self._model, config, adapter_name=lora.key)
        try:
            self._peft.load_adapter(lora.path, adapter_name=lora.key)
        except Exception:
            self._remove_lora(lora)  # a half-loaded adapter must not linger in the model
            raise
        self._peft.eval()

    async def remove_lora(self, lora: EngineLora) -> None:
        await self._run(self._remove_lora, lora)

    def _remove_lora(self, lora: EngineLora) -> None:
        if list(self._peft.peft_config) == [lora.key]:  # PEFT cannot run with zero adapters: unwrap the base model
            self._model, self._peft = self._peft.unload(), None
        else:
            self._peft.delete_adapter(lora.key)

    async def check_health(self) -> None:
        if self._model is None:
            raise RuntimeError("the hf engine has no model loaded")

    async def shutdown(self) -> None:
        self._model = self._peft = None


def _sampling_logprobs(logits_v: Any, temperature: float, top_p: float) -> Any:
    """Log-probs of the distribution requests sample from: softmax(logits / T), renormalised over the smallest
    prefix whose mass reaches top_p (-inf outside it); a greedy request scores at T = 1, as vLLM does."""
    import torch

    logp_v = torch.log_softmax(logits_v / logprob_temperature(temperature), dim=-1)
    if top_p >= 1.0:
        return logp_v
    sorted_v, order = logp_v.sort(descending=True)
    outside = sorted_v.exp().cumsum(0) - sorted_v.exp() >= top_p
    sorted_v[outside] = -torch.inf
    return torch.log_softmax(torch.full_like(logp_v, -torch.inf).scatter(0, order, sorted_v), dim=-1)


def _sample(logits_v: Any, logp_v: Any, temperature: float, generator: Any) -> int:
    """Greedy below SAMPLING_EPS (argmax of the raw logits); otherwise a draw from exp(logp_v)."""
    import torch

    if temperature < SAMPLING_EPS:
        return int(logits_v.argmax())
    return int(torch.multinomial(logp_v.exp(), 1, generator=generator))
