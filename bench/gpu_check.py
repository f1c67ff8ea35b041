"""The GPU path on a lent H100/H200, without vLLM or Ray: a random-weight model of a real architecture (Qwen2.5-7B
from the planner's catalogue), built on the machine, served by the `hf` engine with and without a LoRA adapter
(tokens/s), and trained by the learner code for two GRPO steps on synthetic episodes (step time, peak GPU memory
against the planner's prediction for the same shape). The adapter served is the one the learner published, so the
engine's log-probs of its probe are compared with the learner's too.

Nothing is downloaded: the tokenizer is the tiny model's (fieldkit.tiny_model), trained in-process, and the
model's embedding keeps the catalogue's vocabulary (152064 rows), a superset of the tokenizer's ids.

Run it through bench/gpu_check.sh on the GPU machine (it checks the imports first). `--tiny` runs the same code on
the tiny model's shape, on CPU, in seconds: what tests/test_gpu_check.py runs. No test needs a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig

REPO = Path(__file__).resolve().parent.parent
GENERATE_REQUESTS = 2  # timed generations per model variant (base, LoRA), after one warm-up


def pick_device(tiny: bool) -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if not tiny:
        raise SystemExit("no CUDA device: this check is for a GPU machine (--tiny runs the tiny shape on CPU)")
    return "cpu"


def hf_config(arch: Any, tokenizer: Any) -> Any:
    """A transformers config of `arch`'s shape: Qwen2 where the catalogue says q/k/v carry biases, else Llama."""
    from transformers import LlamaConfig, Qwen2Config

    if arch.ssm or arch.mlp != "gated" or arch.n_attention != arch.layers:
        raise SystemExit(f"{arch.name}: only dense gated-MLP transformers (Qwen2, Llama shapes) are built here")
    if len(tokenizer) > arch.vocab:
        raise SystemExit(f"the tokenizer has {len(tokenizer)} ids; {arch.name}'s embedding only {arch.vocab}")
    shape = {
        "vocab_size": arch.vocab,  # the tokenizer's ids are a prefix; the rest are rows no text maps to
        "hidden_size": arch.hidden,
        "intermediate_size": arch.ffn,
        "num_hidden_layers": arch.layers,
        "num_attention_heads": arch.heads,
        "num_key_value_heads": arch.kv_heads,
        "head_dim": arch.head_dim,
        "tie_word_embeddings": arch.tied_embeddings,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return Qwen2Config(**shape) if arch.qkv_bias else LlamaConfig(**shape)


def build_model(arch: Any, tokenizer_dir: Path, target: Path, dtype: str, device: str) -> int:
    """Random weights of `arch` written to `target` with the tokenizer beside them; returns the parameter count.
    Initialised on `device` (a 7B model initialises in seconds on a GPU, minutes on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(arch, tokenizer), dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    del model
    release(device)
    return params


def release(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def synthetic_batch(config: RunConfig, vocab: int) -> Any:
    """The learner benchmark's batch: 4 groups x 4 episodes x 3 turns of random token ids below `vocab`."""
    from bench.learner import synthetic_groups
    from fieldkit.rl.batch import build_train_batch

    return build_train_batch(synthetic_groups(vocab), config.algorithm)


def train(config: RunConfig, device: str, batch: Any, adapter_dir: Path) -> tuple[dict[str, float], Any]:
    """Two learner steps on `batch` (the second has AdamW's states: both memory phases), then publish the adapter.
    Returns (figures, the AdapterRef)."""
    import torch

    from fieldkit.training.trainer import LoraPolicyTrainer

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if device == "cuda" else 0
    start = time.perf_counter()
    trainer = LoraPolicyTrainer(config, device=device)
    load_s = time.perf_counter() - start
    first = trainer.step(batch, 1)
    second = trainer.step(batch, 2)
    figures = {
        "learner_load_s": load_s,
        "first_step_s": first["step_s"],
        "step_s": second["step_s"],
        "train_tokens_per_s": second["tokens_per_s"],
        "train_tokens": second["tokens"],
        "micro_batches": second["micro_batches"],
        "loss_finite": float(all(abs(m["loss"]) < float("inf") for m in (first, second))),
    }
    if device == "cuda":
        figures["peak_gb"] = (torch.cuda.max_memory_allocated() - before) / 1e9
        figures["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
    start = time.perf_counter()
    ref = trainer.publish(2, adapter_dir)
    figures["publish_s"] = time.perf_counter() - start
    del trainer
    release(device)
    return figures, ref


async def serve(config: RunConfig, model_dir: Path, device: str, ref: Any, new_tokens: int) -> dict[str, float]:
    """The hf engine: base tokens/s, the learner's adapter hot-loaded and its probe scored, LoRA tokens/s."""
    from fieldkit.generation import GenerateRequest
    from fieldkit.training.probe import check_probe
    from services.policy.engine import EngineLora
    from services.policy.hf_engine import HfEngine

    engine = HfEngine(str(model_dir), config.model, config.lora, gpu_fraction=1.0 if device == "cuda" else 0.0)
    start = time.perf_counter()
    await engine.start()
    figures = {"engine_load_s": time.perf_counter() - start}
    prompt = ref.probe.prompt_token_ids

    async def tokens_per_s(lora: EngineLora | None) -> float:
        warm = GenerateRequest(prompt_token_ids=prompt, max_tokens=4, seed=0)
        await engine.generate(prompt, warm, 4, lora)
        tokens, wall = 0, 0.0
        for seed in range(GENERATE_REQUESTS):
            request = GenerateRequest(prompt_token_ids=prompt, max_tokens=new_tokens, seed=seed)
            start = time.perf_counter()
            result = await engine.generate(prompt, request, new_tokens, lora)
            wall += time.perf_counter() - start
            tokens += len(result.token_ids)
        return tokens / wall

    figures["base_tokens_per_s"] = await tokens_per_s(None)
    lora = EngineLora(lora_id=1, key=f"{ref.name}@v{ref.version}#1", path=ref.path)
    start = time.perf_counter()
    await engine.add_lora(lora)
    figures["adapter_load_s"] = time.perf_counter() - start
    probe = ref.probe
    with_adapter = await engine.score(probe.prompt_token_ids, probe.continuation_token_ids, lora)
    without = await engine.score(probe.prompt_token_ids, probe.continuation_token_ids, None)
    check = check_probe(probe, with_adapter, without, config.lora.resolved_probe_tolerance(engine.dtype))
    figures["probe_mean_abs_diff"] = check.mean_abs_diff
    figures["probe_passed"] = float(check.passed)
    figures["lora_tokens_per_s"] = await tokens_per_s(lora)
    figures["lora_over_base"] = figures["lora_tokens_per_s"] / figures["base_tokens_per_s"]
    await engine.shutdown()
    return figures


def predict(model: str, config: RunConfig, batch: Any, device: str, gpu: str) -> dict[str, float]:
    """The planner's learner peak for the shape the step ran: its largest micro-batch, the project's learner
    (HF eager RMSNorm, gradients allocated in backward), nothing else on the device (no engine, no CUDA context:
    max_memory_allocated counts neither)."""
    from fieldkit.capabilities import PlanRequest, load_catalogue, make_plan
    from fieldkit.training.microbatch import plan_micro_batches

    lengths = [len(s.token_ids) for s in batch.sequences]
    groups = plan_micro_batches(lengths, config.algorithm.micro_batch_tokens)
    request = PlanRequest.build(
        method="lora",
        seq=max(lengths),
        micro_batch=max(len(g) for g in groups),
        rank=config.lora.rank,
        target_modules=config.lora.target_modules,
        lora_dropout=config.lora.dropout,
        dtype="float32" if device == "cpu" else config.model.resolved_dtype(on_gpu=True),
        kernels="eager",
        device=device,
        grads="on_demand",
        overhead_gb=0,
        headroom=0,
    )
    plan = make_plan(load_catalogue(), model, gpu, request)
    assert plan.best is not None, plan.summary
    return {
        "predicted_peak_gb": plan.best.peak_gb,
        "seq": float(request.seq),
        "micro_batch": float(request.micro_batch),
    }


def gpu_kind() -> str:
    """The catalogue's name of this GPU (h100 unless the device says H200)."""
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return "h200" if "H200" in name else "h100"


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """rich where the image has it, aligned text where it does not."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for name, value, note in rows:
            print(f"  {name:<40}{value:>14}  {note}")
        return
    table = Table("measure", "value", "against", title=title)
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


def report(figures: dict[str, Any]) -> None:
    f = figures
    rows = [
        ("parameters (built / catalogue)", f"{f['params']:.4g}", f"{f['catalogue_params']:.4g} in the catalogue"),
        ("generation, base (tokens/s)", f"{f['base_tokens_per_s']:.1f}", f"hf engine, 1 request, {f['new_tokens']}"),
        ("generation, LoRA (tokens/s)", f"{f['lora_tokens_per_s']:.1f}", f"x{f['lora_over_base']:.2f} of base"),
        (
            "probe |Δ log-prob|, engine vs learner",
            f"{f['probe_mean_abs_diff']:.4f}",
            "passed" if f["probe_passed"] else "FAILED",
        ),
        ("GRPO step (s)", f"{f['step_s']:.3f}", f"first step {f['first_step_s']:.3f} s"),
        ("learner tokens/s", f"{f['train_tokens_per_s']:.0f}", f"{f['train_tokens']:.0f} tokens per step"),
        (
            "planner: predicted peak (GB)",
            f"{f['predicted_peak_gb']:.2f}",
            f"seq {f['seq']:.0f} x micro-batch {f['micro_batch']:.0f}",
        ),
    ]
    if "peak_gb" in f:
        rows.append(
            (
                "measured peak allocated (GB)",
                f"{f['peak_gb']:.2f}",
                f"x{f['peak_over_predicted']:.3f} of the prediction",
            )
        )
        rows.append(("measured peak reserved (GB)", f"{f['peak_reserved_gb']:.2f}", "the caching allocator's pool"))
    print_table(f"GPU check: {f['model']} on {f['device_name']} ({f['wall_s']:.0f} s)", rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model's shape; runs on CPU")
    parser.add_argument("--model", default="qwen2.5-7b", help="a catalogue model (fieldkit/capabilities/models.yaml)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per timed generation (128; tiny: 16)")
    parser.add_argument(
        "--micro-batch-tokens", type=int, default=2048, help="the learner's algorithm.micro_batch_tokens"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="where the model is written (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from fieldkit.capabilities import load_catalogue
    from fieldkit.tiny_model import build_tiny_model

    started = time.perf_counter()
    device = pick_device(args.tiny)
    dtype = "bfloat16" if device == "cuda" else "float32"
    new_tokens = args.new_tokens or (16 if args.tiny else 128)
    tiny_dir = build_tiny_model(REPO / "runs" / "models")
    catalogue = load_catalogue()
    model = str(tiny_dir) if args.tiny else args.model
    arch = catalogue.model(model)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fieldkit-gpu-check-"))
    try:
        start = time.perf_counter()
        params = build_model(arch, tiny_dir, work / "model", dtype, device)
        figures: dict[str, Any] = {
            "model": arch.name,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "params": float(params),
            "catalogue_params": float(arch.param_counts().total),
            "build_s": time.perf_counter() - start,
            "new_tokens": new_tokens,
        }
        config = RunConfig.model_validate(
            {
                "model": {"name_or_path": str(work / "model"), "engine": "hf", "dtype": dtype},
                "algorithm": {"micro_batch_tokens": args.micro_batch_tokens},
                "resources": {"num_gpus": 1 if device == "cuda" else 0},
                "paths": {"runs_dir": str(work / "runs")},
            }
        )
        batch = synthetic_batch(config, len(AutoTokenizer.from_pretrained(tiny_dir)))
        figures.update(predict(model, config, batch, device, gpu_kind()))
        try:
            learner, ref = train(config, device, batch, work / "adapter")
        except torch.OutOfMemoryError as exc:
            raise SystemExit(
                f"out of GPU memory in the learner step; the planner predicted {figures['predicted_peak_gb']:.1f} GB "
                f"for seq {figures['seq']:.0f} x micro-batch {figures['micro_batch']:.0f} ({exc})"
            ) from exc
        figures.update(learner)
        if "peak_gb" in figures:
            figures["peak_over_predicted"] = figures["peak_gb"] / figures["predicted_peak_gb"]
        figures.update(asyncio.run(serve(config, work / "model", device, ref, new_tokens)))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    figures["wall_s"] = time.perf_counter() - started
    report(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
