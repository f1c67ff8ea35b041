"""The tiny model: deterministic from its seed, cached, loadable offline by transformers with its chat template."""

from __future__ import annotations

from pathlib import Path

from fieldkit.tiny_model import IM_END, IM_START, TinyModelSpec, build_tiny_model


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", TinyModelSpec(seed=3))
    second = build_tiny_model(tmp_path / "b", TinyModelSpec(seed=3))
    other = build_tiny_model(tmp_path / "c", TinyModelSpec(seed=4))
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_cached_build_is_reused(tiny_model_dir: Path) -> None:
    mtime = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir.parent) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_loads_offline_with_chatml_and_the_engine_shape(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size // model.config.num_attention_heads == 64  # vLLM CPU: head_dim 32/64/128
    assert model.dtype == torch.bfloat16 and model.config.tie_word_embeddings

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ls -la"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == f"{IM_START}system\nBe brief.{IM_END}\n{IM_START}user\nls -la{IM_END}\n{IM_START}assistant\n"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level BPE round-trips exactly
    assert tokenizer.convert_tokens_to_ids(IM_END) == model.config.eos_token_id

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), model.config.vocab_size)
    assert torch.isfinite(logits.float()).all()
