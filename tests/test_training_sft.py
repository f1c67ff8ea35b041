"""LoRA SFT: masks from episodes and transcripts, and a warm start that teaches the demonstrated reply."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from rl_episodes import make_episode, make_turn
from test_training_trainer import run_config
from training_batches import fixed_batch

from fieldkit.training.sft import SftExample, examples_from_chats, examples_from_episodes

CHAT = [
    {"role": "system", "content": "You are a shell agent."},
    {"role": "user", "content": "List the files."},
    {"role": "assistant", "content": "```bash\nls -la\n```"},
    {"role": "user", "content": "OBSERVATION (exit 0)\nnotes.txt"},
    {"role": "assistant", "content": "TASK_COMPLETE"},
]


def test_episode_examples_train_every_reply_and_no_context() -> None:
    episode = make_episode(
        "e", 1.0, [make_turn(0, prompt=(1, 2), response=(3, 4)), make_turn(1, prompt=(5,), response=(6,))]
    )
    (example,) = examples_from_episodes([episode, make_episode("empty", 0.0, [])])
    assert example.token_ids == [1, 2, 3, 4, 5, 6] and example.assistant_mask == [0, 0, 1, 1, 0, 1]


def test_chat_examples_mask_exactly_the_assistant_replies(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    (example,) = examples_from_chats(tokenizer, [CHAT])
    full = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert example.token_ids == list(full)
    trained = [t for t, m in zip(example.token_ids, example.assistant_mask, strict=True) if m]
    assert tokenizer.decode(trained) == "```bash\nls -la\n```<|im_end|>TASK_COMPLETE<|im_end|>"
    with pytest.raises(ValueError, match="chat 0 has no assistant"):
        examples_from_chats(tokenizer, [CHAT[:2]])


def test_an_example_without_assistant_tokens_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs assistant tokens"):
        SftExample(token_ids=[1, 2], assistant_mask=[0, 0])


def test_warm_start_teaches_the_replies_and_becomes_the_kl_reference(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from fieldkit.training.trainer import LoraPolicyTrainer

    cfg = run_config(tiny_model_dir, tmp_path)
    cfg = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"epochs": 3, "learning_rate": 5e-3})})
    trainer = LoraPolicyTrainer(cfg)
    from transformers import AutoTokenizer

    examples = examples_from_chats(AutoTokenizer.from_pretrained(tiny_model_dir), [CHAT] * 8)
    reported: list[tuple[int, int]] = []
    metrics = trainer.warm_start(examples, lambda done, total: reported.append((done, total)))
    assert metrics["sft_loss_last"] < metrics["sft_loss_first"], metrics
    assert metrics["sft_steps"] == 6  # 8 examples, batch 4, 3 epochs
    assert reported == [(step, 6) for step in range(1, 7)]  # progress: each optimizer step, as it finishes
    # the SFT adapter is now the reference: the first RL step measures no KL, and the weights have left zero
    assert trainer.step(fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm), 1)["kl"] == pytest.approx(0, abs=1e-6)
    assert any(w.abs().sum() > 0 for n, w in trainer.reference.weights.items() if "lora_B" in n)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in trainer.params)
