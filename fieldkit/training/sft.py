"""LoRA SFT on episodes or chat transcripts, the loss on assistant tokens only, with TRL's SFTTrainer.

TRL handles multi-turn masks when it is given pre-tokenised rows: with `input_ids` and `assistant_masks` columns
SFTTrainer skips its own tokenisation and sets the label of every token whose mask is 0 to -100, however many
assistant turns a row holds. So episodes train on exactly the ids the engine produced (nothing re-tokenised), and
transcripts are tokenised here with the model's chat template. (TRL's own `assistant_only_loss=True` needs
`{% generation %}` markers in the template, which neither Qwen's template nor the tiny model's has.)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldkit.config import SftConfig
from fieldkit.gym.records import Episode
from fieldkit.rl.batch import episode_tokens


class SftExample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_ids: list[int] = Field(min_length=2)
    assistant_mask: list[int]  # 1 on the tokens the loss trains (position t: token t given tokens < t)

    @model_validator(mode="after")
    def _aligned_with_something_to_learn(self) -> SftExample:
        if len(self.assistant_mask) != len(self.token_ids):
            raise ValueError(f"{len(self.assistant_mask)} mask entries for {len(self.token_ids)} tokens")
        if not any(self.assistant_mask) or self.assistant_mask[0]:
            raise ValueError("an example needs assistant tokens, and context before the first of them")
        return self


def examples_from_episodes(episodes: Sequence[Episode]) -> list[SftExample]:
    """One example per episode that sampled tokens: its context masked out, every reply trained."""
    examples = []
    for episode in episodes:
        ids, mask = episode_tokens(episode)
        if any(mask):
            examples.append(SftExample(token_ids=ids, assistant_mask=mask))
    return examples


def examples_from_chats(tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]]) -> list[SftExample]:
    """Tokenise transcripts with the chat template; each assistant message is trained up to and including its
    end-of-turn token (what the engine stops on), never the template's text around it."""
    examples = []
    for n, chat in enumerate(chats):
        ids: list[int] = []
        mask: list[int] = []
        for k, message in enumerate(chat):
            if message.get("role") != "assistant":
                continue
            before = _render(tokenizer, chat[:k], generation_prompt=True)
            after = _render(tokenizer, chat[: k + 1], generation_prompt=False)
            if after[: len(before)] != before or before[: len(ids)] != ids:
                raise ValueError(f"chat {n}, message {k}: the chat template re-renders earlier turns differently")
            reply = after[len(before) :]
            trained = reply.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in reply else len(reply)
            mask += [0] * (len(before) - len(ids)) + [1] * trained + [0] * (len(reply) - trained)
            ids = after
        if not any(mask):
            raise ValueError(f"chat {n} has no assistant message to learn from")
        examples.append(SftExample(token_ids=ids, assistant_mask=mask))
    return examples


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    rendered = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
    )
    return list(rendered["input_ids"])


def run_sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[SftExample],
    sft: SftConfig,
    *,
    seed: int,
    device: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Train the model's active LoRA adapter in place; returns the first and last logged loss, steps and time.
    `progress(done, total)` is called after each optimizer step."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Report(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)

    if not examples:
        raise ValueError("SFT needs at least one example")
    rows = []
    for n, example in enumerate(examples):
        mask = example.assistant_mask[: sft.max_length]
        if not any(mask):
            raise ValueError(f"example {n}: no assistant token within sft.max_length = {sft.max_length}")
        rows.append({"input_ids": example.token_ids[: sft.max_length], "assistant_masks": mask})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fieldkit-sft-") as scratch:
        args = SFTConfig(
            output_dir=scratch,  # nothing is saved there: the caller owns the adapter
            num_train_epochs=sft.epochs,
            per_device_train_batch_size=sft.batch_size,
            learning_rate=sft.learning_rate,
            max_length=sft.max_length,
            save_strategy="no",
            report_to=[],
            logging_steps=1,
            disable_tqdm=True,
            use_cpu=device == "cpu",
            # TRL defaults to bf16 autocast; CPUs emulate bf16 matmuls (~10x slower per token here), so only on GPU
            bf16=device != "cpu",
            seed=seed,
            # TRL turns checkpointing on by default; it would stay enabled on the resident model and slow every
            # later RL step, and a LoRA run on a model that fits does not need it
            gradient_checkpointing=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[Report()],
        )
        result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "sft_loss_first": float(losses[0]),
        "sft_loss_last": float(losses[-1]),
        "sft_steps": float(result.global_step),
        "sft_examples": float(len(rows)),
        "sft_s": time.perf_counter() - started,
    }
