"""The chat-template delta: appending an observation turn to a token-id prefix, checked against a full re-render."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fieldkit.chat_tokens import ChatDeltaBuilder, render

SYSTEM = {"role": "system", "content": "You are a shell agent."}
USER = {"role": "user", "content": "List the files."}
OBSERVATION = {"role": "user", "content": "OBSERVATION (exit 0)\nnotes.txt"}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_delta_after_a_reply_that_ended_on_the_end_of_turn_token(tokenizer: Any) -> None:
    builder = ChatDeltaBuilder(tokenizer)
    reply = "```bash\nls -la\n```"
    prefix = render(tokenizer, [SYSTEM, USER], add_generation_prompt=True) + encode(tokenizer, reply)
    prefix.append(tokenizer.eos_token_id)
    messages = [SYSTEM, USER, {"role": "assistant", "content": reply}]
    delta = builder.append(prefix, messages, [OBSERVATION])
    assert delta.template_prefix_ok and delta.text_ok and delta.tokens_ok and delta.mismatch is None
    assert prefix + delta.token_ids == render(tokenizer, [*messages, OBSERVATION], add_generation_prompt=True)
    assert tokenizer.decode(delta.token_ids).startswith("\n<|im_start|>user\nOBSERVATION")
    assert builder.checked == 1 and not builder.mismatches


def test_a_reply_cut_by_max_tokens_gets_its_turn_closed(tokenizer: Any) -> None:
    builder = ChatDeltaBuilder(tokenizer)
    reply = "```bash\ncat notes"
    prefix = render(tokenizer, [USER], add_generation_prompt=True) + encode(tokenizer, reply)  # no end-of-turn token
    delta = builder.append(prefix, [USER, {"role": "assistant", "content": reply}], [OBSERVATION])
    assert delta.token_ids[0] == tokenizer.eos_token_id
    assert delta.tokens_ok


def test_a_non_canonical_tokenisation_of_the_reply_is_reported_not_patched(tokenizer: Any) -> None:
    builder = ChatDeltaBuilder(tokenizer)
    reply = "ls -la"
    char_by_char = [t for c in reply for t in encode(tokenizer, c)]
    assert char_by_char != encode(tokenizer, reply)  # the model may sample this spelling of the same text
    prefix = render(tokenizer, [USER], add_generation_prompt=True) + char_by_char + [tokenizer.eos_token_id]
    delta = builder.append(prefix, [USER, {"role": "assistant", "content": reply}], [OBSERVATION])
    assert delta.text_ok and not delta.tokens_ok
    assert "same text, different token ids" in delta.mismatch
    assert prefix[-1] == tokenizer.eos_token_id and delta.token_ids[0] != tokenizer.eos_token_id  # prefix kept
    assert builder.mismatches == {"tokens": 1}


def test_a_template_that_rewrites_earlier_turns_is_counted(tokenizer: Any) -> None:
    rewriting = copy.deepcopy(tokenizer)
    # Like templates that drop earlier turns' reasoning: an assistant turn renders in full only while it is last.
    rewriting.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}(earlier reply){% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    builder = ChatDeltaBuilder(rewriting)
    reply = "ls"
    prefix = render(rewriting, [USER], add_generation_prompt=True) + encode(rewriting, reply) + [rewriting.eos_token_id]
    delta = builder.append(prefix, [USER, {"role": "assistant", "content": reply}], [OBSERVATION])
    assert not delta.template_prefix_ok and not delta.text_ok
    assert "(earlier reply)" in delta.mismatch
    assert builder.mismatches["template_prefix"] == 1 and builder.mismatches["text"] == 1


def test_three_turns_accumulate_without_retokenising(tokenizer: Any) -> None:
    builder = ChatDeltaBuilder(tokenizer)
    messages = [SYSTEM, USER]
    ids = render(tokenizer, messages, add_generation_prompt=True)
    for turn, reply in enumerate(["ls", "cat notes.txt", "TASK_COMPLETE"]):
        ids += [*encode(tokenizer, reply), tokenizer.eos_token_id]
        messages.append({"role": "assistant", "content": reply})
        observation = {"role": "user", "content": f"OBSERVATION (exit 0)\nturn {turn}"}
        delta = builder.append(ids, messages, [observation])
        assert delta.tokens_ok, delta.mismatch
        ids += delta.token_ids
        messages.append(observation)
    assert ids == render(tokenizer, messages, add_generation_prompt=True)
    assert builder.checked == 3 and not builder.mismatches


def test_a_template_without_an_end_of_turn_token_is_refused(tokenizer: Any) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="does not close an assistant turn with eos"):
        ChatDeltaBuilder(plain)
