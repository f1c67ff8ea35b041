"""Multi-turn token accounting: the chat-template delta that appends new messages to a token-id prefix.

A rollout keeps the exact ids the model saw and sampled. For the next turn it appends only the tokens the chat
template puts between the end of the assistant's reply and the next generation prompt (the observation turn), so
earlier turns are never re-tokenised. The delta comes from the template itself: rendered after a placeholder
conversation, it is what the template emits after any closed assistant turn. A reply that did not end on the
end-of-turn token (cut by max_tokens or a stop string) gets the closing tokens first.

Each append is checked against a full re-render of the conversation as messages. A mismatch is reported in the
result and counted in `ChatDeltaBuilder.mismatches`, never patched: the ids the model saw are the truth the learner
trains on; a mismatch means a client that re-renders text (an OpenAI-style chat call) would feed the model
something else. The tokenizer is any object with transformers' `apply_chat_template`, `decode` and `eos_token_id`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

Message = Mapping[str, str]
_PLACEHOLDER = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]


class TurnDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_ids: list[int]  # append these to the prefix; the next turn's prompt_token_ids in an Episode
    template_prefix_ok: bool  # re-rendering the conversation leaves the earlier turns' tokens unchanged
    text_ok: bool  # prefix + delta decodes to the text of a full re-render
    tokens_ok: bool  # ... and is the same ids (False alone: the model tokenised its reply differently)
    mismatch: str | None = None  # the first difference, when any check failed


def render(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(rendered["input_ids"])


class ChatDeltaBuilder:
    """Computes turn deltas for one tokenizer and counts re-render mismatches (for a rollout worker's metrics)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_token_id
        placeholder = render(tokenizer, _PLACEHOLDER, add_generation_prompt=False)
        if self.eos not in placeholder:
            raise ValueError(f"the chat template does not close an assistant turn with eos token id {self.eos}")
        last_eos = len(placeholder) - 1 - placeholder[::-1].index(self.eos)
        self._placeholder = placeholder
        self.turn_closing = placeholder[last_eos:]  # eos and what the template puts after it (ChatML: "\n")
        self.checked = 0
        self.mismatches: Counter[str] = Counter()  # "template_prefix", "text", "tokens"

    def delta(self, prefix_ids: Sequence[int], new_messages: Sequence[Message]) -> list[int]:
        """Tokens to append to `prefix_ids` (ending with an assistant reply) to add `new_messages` and prompt again."""
        extended = render(self.tokenizer, [*_PLACEHOLDER, *new_messages], add_generation_prompt=True)
        # The placeholder reply's closing is the n-th eos (a template may re-render the turns before it, not this).
        ends = [i for i, token in enumerate(extended) if token == self.eos][self._placeholder.count(self.eos) - 1 :]
        closing_at = ends[0] if ends else -1
        if closing_at < 0 or extended[closing_at : closing_at + len(self.turn_closing)] != self.turn_closing:
            raise ValueError("the chat template does not close the assistant turn the same way once messages follow")
        after_turn = extended[closing_at + len(self.turn_closing) :]
        closing = self.turn_closing[1:] if prefix_ids and prefix_ids[-1] == self.eos else self.turn_closing
        return [*closing, *after_turn]

    def append(
        self, prefix_ids: Sequence[int], messages: Sequence[Message], new_messages: Sequence[Message]
    ) -> TurnDelta:
        """Delta for `new_messages`, checked against a full re-render of `messages + new_messages`.

        `messages` is the conversation `prefix_ids` holds, assistant contents being the decoded replies.
        """
        delta = self.delta(prefix_ids, new_messages)
        candidate = [*prefix_ids, *delta]
        full = render(self.tokenizer, [*messages, *new_messages], add_generation_prompt=True)
        earlier = render(self.tokenizer, messages, add_generation_prompt=False)
        template_prefix_ok = full[: len(earlier)] == earlier
        candidate_text = self.tokenizer.decode(candidate, skip_special_tokens=False)
        full_text = self.tokenizer.decode(full, skip_special_tokens=False)
        result = TurnDelta(
            token_ids=delta,
            template_prefix_ok=template_prefix_ok,
            text_ok=candidate_text == full_text,
            tokens_ok=candidate == full,
            mismatch=_first_difference(candidate_text, full_text) if candidate != full else None,
        )
        self.checked += 1
        checks = {"template_prefix": template_prefix_ok, "text": result.text_ok, "tokens": result.tokens_ok}
        self.mismatches.update(check for check, ok in checks.items() if not ok)
        return result


def _first_difference(ours: str, rerendered: str) -> str:
    if ours == rerendered:
        return "same text, different token ids (the model's tokenisation of its reply is not the canonical one)"
    shorter = min(len(ours), len(rerendered))
    at = next((i for i in range(shorter) if ours[i] != rerendered[i]), shorter)
    return f"at char {at}: ours {ours[at : at + 40]!r} vs re-render {rerendered[at : at + 40]!r}"
