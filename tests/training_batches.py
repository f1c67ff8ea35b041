"""A fixed training batch for the learner tests: real tokens of the tiny model, on-policy behaviour log-probs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from rl_episodes import make_episode, make_turn

from fieldkit.config import AlgorithmConfig
from fieldkit.rl.batch import build_train_batch
from fieldkit.rl.records import TrainBatch

REPLIES = ["```bash\nls -la\n```", "```bash\ncat README.md\n```", "TASK_COMPLETE", "```bash\nwc -l data.csv\n```"]


@functools.cache
def base_model(model_dir: Path) -> tuple[Any, Any]:
    """The base model in float32 (the behaviour policy of the fixed batches) and its tokenizer, loaded once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def fixed_batch(model_dir: Path, rewards: list[float], cfg: AlgorithmConfig | None = None) -> TrainBatch:
    """One group: the same prompt, a different one-turn reply per rollout, the base model's log-probs."""
    from fieldkit.training.logprobs import continuation_logprobs

    model, tokenizer = base_model(model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "List the files."}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    episodes = []
    for i, reward in enumerate(rewards):
        reply_ids = [
            *tokenizer(REPLIES[i % len(REPLIES)], add_special_tokens=False)["input_ids"],
            tokenizer.eos_token_id,
        ]
        logprobs = continuation_logprobs(model, prompt_ids, reply_ids)
        turn = make_turn(0, prompt=tuple(prompt_ids), response=tuple(reply_ids), logprobs=tuple(logprobs))
        episodes.append(make_episode(f"e{i}", reward, [turn]))
    return build_train_batch([episodes], cfg or AlgorithmConfig())
