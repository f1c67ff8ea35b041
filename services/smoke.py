"""The smoke path of `fieldkit demo`: local Ray, the tiny model, one generation through the vLLM CPU engine.

It proves the three foundations every other piece stands on, in about a minute on 2 cores. The policy server
(services/policy) replaces the bare engine here once it lands.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from fieldkit.tiny_model import build_tiny_model
from services.cluster import connect

ENGINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time
    "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GB; the default would take 4+
}


@ray.remote(num_cpus=1, runtime_env={"env_vars": ENGINE_ENV})
class SmokeEngine:
    def __init__(self, model_dir: str) -> None:
        from vllm import LLM

        self.llm = LLM(model=model_dir, dtype="bfloat16", max_model_len=1024, seed=0)

    def chat(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        prompt_ids = list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        )
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=0, logprobs=0)
        out = self.llm.generate([TokensPrompt(prompt_token_ids=prompt_ids)], params, use_tqdm=False)[0].outputs[0]
        return {
            "prompt_token_ids": prompt_ids,
            "token_ids": list(out.token_ids),
            "logprobs": [step[tok].logprob for tok, step in zip(out.token_ids, out.logprobs, strict=True)],
            "text": out.text,
            "finish_reason": out.finish_reason,
        }


def run_smoke(prompt: str = "List the files.", max_tokens: int = 16) -> dict[str, Any]:
    started = time.perf_counter()
    cluster = connect()
    model_dir = build_tiny_model()
    engine = SmokeEngine.remote(str(model_dir.resolve()))  # type: ignore[attr-defined]
    result = ray.get(engine.chat.remote(prompt, max_tokens))
    ray.kill(engine)
    result["dashboard_url"] = cluster.dashboard_url
    result["model_dir"] = str(model_dir)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result
