"""The tiny agent's protocol prior: invented chores in the agent protocol, and a pretraining that learns them."""

from __future__ import annotations

import random
import re
import shlex
from pathlib import Path

from fieldkit.agent_prior import PRIOR_POOL, pretrain_on_prior, prior_dialogue, prior_dialogues
from fieldkit.gym.generator import generate_tasks
from fieldkit.gym.personas import personas
from fieldkit.gym.protocol import SYSTEM_PROMPT, parse_action
from fieldkit.tiny_model import tiny_agent_spec


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


def _phrases(text: str, n: int = 4) -> set[tuple[str, ...]]:
    """The runs of n words within one stretch of plain text (backticked names and punctuation end a stretch)."""
    stretches = re.split(r"`[^`]*`|[.,;:?!()\n]", text.lower())
    runs = [re.findall(r"[a-z0-9]+", stretch) for stretch in stretches]
    return {tuple(run[i : i + n]) for run in runs for i in range(len(run) - n + 1)}


def _names(path: str) -> set[str]:
    """A path, and each of its directory and file names."""
    return {path.strip("/"), *(part for part in path.strip("/").split("/") if part not in ("", "."))}


def test_the_pretraining_corpus_shares_no_clawgym_phrasing_name_or_persona() -> None:
    """Every dialogue the shipped tiny-agent pretrains on, against the 200 ClawGym tasks: no four-word phrase of an
    intent, no path or file/directory name of a workspace or an intent, no persona role or context."""
    tasks = generate_tasks()
    intent_phrases = set().union(*(_phrases(task.intent) for task in tasks))
    task_names: set[str] = set()
    for task in tasks:
        quoted = [q for q in re.findall(r"`([^`]+)`", task.intent) if re.search(r"[./]", q)]
        for path in [f.path for f in task.workspace_seed.files] + quoted:
            task_names |= _names(path) if " " not in path and "*" not in path else set()
    chats = prior_dialogues(PRIOR_POOL, tiny_agent_spec().seed)  # the pool the pretraining draws from
    prompts = [chat[1]["content"] for chat in chats]
    used: set[str] = set()
    for chat, prompt in zip(chats, prompts, strict=True):
        assert not _phrases(prompt) & intent_phrases, prompt
        used.update(name for q in re.findall(r"`([^`]+)`", prompt) for name in _names(q))
        for reply in chat[2:-1:2]:
            used.update(n for word in shlex.split(parse_action(reply["content"]).command or "") for n in _names(word))
    assert len(used) > 50 and not used & task_names
    text = "\n".join(prompts)
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
    accuracy = record["prior_accuracy"]  # on fresh dialogues; six steps teach no command yet
    assert accuracy == {"first_program": 0.0, "first_command": 0.0, "all_replies": 0.0}
    assert build_tiny_model(tmp_path, spec, lambda *_: reported.append((-1, -1))) == built  # cached: no training
    assert len(reported) == 6
