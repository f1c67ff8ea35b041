"""The tiny test model: a Qwen2 architecture with a byte-level BPE tokenizer, built offline from a seed.

Tests and the demo need a real model that transformers, PEFT and the vLLM CPU engine all load, and nothing can be
downloaded. So we build one: random weights from a seed (hidden 128, 2 layers, head_dim 64: vLLM's CPU attention
needs head_dim 32/64/128), a tokenizer trained in-process on shell and ClawGym text, the ChatML special tokens and
Qwen's chat template. The build is cached under runs/models/ and keyed by its spec, so a changed spec rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BUILD = 2  # revision of what a spec builds (tokenizer, prior corpus): bump it so a cached build is not reused
ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

# Qwen2's ChatML template, reduced to what our agent protocol uses (system/user/assistant, generation prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 2  # head_dim = 128 / 2 = 64
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    dtype: str = "bfloat16"
    # Pretraining on fieldkit.agent_prior's invented shell chores, so the model answers in the agent protocol and
    # stops when done (what an instruct model brings); 0 leaves the weights random.
    prior_steps: int = 0
    prior_batch_size: int = 32
    prior_learning_rate: float = 3e-3

    def key(self) -> str:
        digest = hashlib.sha256(json.dumps({**asdict(self), "build": BUILD}, sort_keys=True).encode()).hexdigest()[:10]
        return f"tiny-qwen2-s{self.seed}-{digest}"


def tokenizer_corpus() -> list[str]:
    """Shell commands, file names and agent-protocol text: what the tiny model reads and writes."""
    commands = [
        "ls -la",
        "ls -R",
        "cat README.md",
        "head -n 5 notes.txt",
        "tail -n 20 train.log",
        "wc -l data.csv",
        "mkdir -p archive/2024",
        "mv draft.md posts/draft.md",
        "cp config.yaml config.yaml.bak",
        "rm -f tmp.txt",
        "rm -rf build",
        "find . -name '*.py'",
        "grep -rn TODO src",
        "grep -c ERROR logs/app.log",
        "sed -i 's/foo/bar/g' main.c",
        "echo 'hello' > out.txt",
        "printf '%s\\n' a b >> list.txt",
        "touch src/__init__.py",
        "sort names.txt | uniq",
        "awk -F, '{print $1}' results.csv",
        'echo "Task complete."',
        "find . -type f -name '*.png' -exec mv {} sprites/ \\;",
        "grep -l import *.py > imports.txt",
    ]
    words = (
        "file directory workspace move rename copy delete create write read list find grep sed count lines "
        "sprite level player enemy godot notebook checkpoint dataset csv json yaml config log eval metric run "
        "markdown frontmatter title image docs article python package module import init service api handler "
        "docker compose workflow github actions ci firmware header driver sensor uart paper bib section figure "
        "table references abstract task complete observation exit stdout stderr timed out assistant user system"
    ).split()
    paths = [f"{d}/{w}.{ext}" for d in ("src", "docs", "data", "runs") for w in words[:20] for ext in ("py", "md")]
    protocol = [
        "You are a shell agent. Reply with exactly one ```bash block holding one command, or TASK_COMPLETE.",
        "OBSERVATION (exit 0)\n",
        "OBSERVATION (exit 124, TIMED OUT)\n",
        "TASK_COMPLETE",
        "```bash\nls -la\n```",
        "```bash\ncat notes.txt\n```",
    ]
    return commands * 20 + [" ".join(words)] * 10 + paths + protocol * 20


def build_tokenizer(spec: TinyModelSpec):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=spec.max_position_embeddings,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    models_dir: str | Path = "runs/models",
    spec: TinyModelSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build (or reuse the cached) tiny model and return its directory, loadable with HF_HUB_OFFLINE=1.

    `progress(done, total)` follows the prior's pretraining steps, when there are any to run."""
    spec = spec or TinyModelSpec()
    target = Path(models_dir) / spec.key()
    if (target / ".complete").exists():
        return target

    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(spec)
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    endoftext = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        pad_token_id=endoftext,
        torch_dtype=spec.dtype,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)  # float32: the prior trains in it
    model.generation_config = GenerationConfig(eos_token_id=[im_end, endoftext], pad_token_id=endoftext)
    record: dict[str, Any] = asdict(spec)
    if spec.prior_steps:
        from fieldkit.agent_prior import ACCURACY_DIALOGUES, pretrain_on_prior, prior_accuracy

        model = model.to(getattr(torch, spec.dtype)).float()  # start from the tiny model's weights as saved
        losses = pretrain_on_prior(
            model,
            tokenizer,
            steps=spec.prior_steps,
            batch_size=spec.prior_batch_size,
            learning_rate=spec.prior_learning_rate,
            seed=spec.seed,
            progress=progress,
        )
        record["prior_loss"] = {"first": losses[0], "last": losses[-1]}
        # On dialogues the pretraining never drew (another seed), in float32, before any ClawGym data.
        record["prior_accuracy"] = prior_accuracy(model, tokenizer, ACCURACY_DIALOGUES, seed=spec.seed + 10_000)
    return save_model_dir(model.to(getattr(torch, spec.dtype)), tokenizer, target, "fieldkit_spec.json", record)


def tiny_agent_spec(seed: int = 0) -> TinyModelSpec:
    """`tiny-agent`: the tiny model after its protocol prior (~8 min on 2 cores, once; cached like the tiny one)."""
    return TinyModelSpec(seed=seed, prior_steps=300)


def save_model_dir(model: Any, tokenizer: Any, target: Path, record_name: str, record: dict[str, Any]) -> Path:
    """Save a model, its tokenizer and a JSON record of where it came from as `target`, marked `.complete`.

    Written beside the target and renamed, so a crash mid-save never leaves a half model that looks complete."""
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / record_name).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (staging / ".complete").touch()
    try:
        staging.rename(target)
    except OSError:  # another process finished the same build first; theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target
