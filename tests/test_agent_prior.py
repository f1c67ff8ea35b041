"""The tiny agent's protocol prior: invented chores in the agent protocol, and a pretraining that learns them."""

from __future__ import annotations

import random
from pathlib import Path

from fieldkit.agent_prior import pretrain_on_prior, prior_dialogue, prior_dialogues
from fieldkit.gym.personas import personas
from fieldkit.gym.protocol import SYSTEM_PROMPT, parse_action


def test_dialogues_follow_the_protocol_and_end_with_a_clean_stop() -> None:
    rng = random.Random(7)
    for _ in range(200):
        chat = prior_dialogue(rng)
        assert chat[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert [m["role"] for m in chat[1:]] == ["user", "assistant"] * ((len(chat) - 1) // 2)
        replies = [parse_action(m["content"]) for m in chat if m["role"] == "assistant"]
        assert [a.kind for a in replies] == ["command"] * (len(replies) - 1) + ["done"]
        for reply, observation in zip(chat[2:-1:2], chat[3::2], strict=True):
            assert observation["content"].startswith("OBSERVATION (exit 0)\n")
            command = parse_action(reply["content"]).command or ""
            names = [w for w in command.split() if "." in w and not w.startswith("'")]
            assert all(name in chat[1]["content"] for name in names), (command, chat[1]["content"])


def test_no_clawgym_persona_leaks_into_the_prior() -> None:
    """The prior must leave held-out ClawGym tasks unseen: none of their personas' roles or contexts appear."""
    text = "\n".join(m["content"] for chat in prior_dialogues(500, seed=0) for m in chat)
    for persona in personas():
        assert persona.role not in text
        assert persona.context not in text
    assert prior_dialogues(3, seed=1) == prior_dialogues(3, seed=1)
    assert prior_dialogues(3, seed=1) != prior_dialogues(3, seed=2)


def test_pretraining_learns_the_replies(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    losses = pretrain_on_prior(model, tokenizer, steps=100, batch_size=4, learning_rate=3e-3, seed=0)
    assert len(losses) == 100
    assert losses[0] > 6.0  # a random model over a 2,048-token vocabulary
    assert sum(losses[-10:]) / 10 < 0.4 * losses[0]


def test_a_tiny_model_with_a_prior_is_built_cached_and_recorded(tmp_path: Path) -> None:
    import json

    from fieldkit.tiny_model import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(prior_steps=6, prior_batch_size=2)
    reported: list[tuple[int, int]] = []
    built = build_tiny_model(tmp_path, spec, lambda done, total: reported.append((done, total)))
    assert built.name == spec.key() != TinyModelSpec().key()
    assert reported == [(step, 6) for step in range(1, 7)]  # each optimizer step, as it finishes
    record = json.loads((built / "fieldkit_spec.json").read_text())
    assert record["prior_steps"] == 6 and record["prior_loss"]["last"] < record["prior_loss"]["first"]
    assert build_tiny_model(tmp_path, spec, lambda *_: reported.append((-1, -1))) == built  # cached: no training
    assert len(reported) == 6
