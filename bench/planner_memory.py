"""The planner's memory model against measurement: train real models on CPU and compare peak memory with the
prediction for the same shape.

The measured figure is the peak of live tensor bytes over two optimizer steps (the second has AdamW's states), as
LiveTensorPeak counts them: every storage an op creates is added when it appears and taken off when it is freed,
the CPU counterpart of a GPU's max_memory_allocated, and deterministic. Peak RSS above an in-process baseline is
printed beside it as what the OS saw: each case runs in a fresh process with glibc's mmap threshold pinned at
64 KiB (every tensor above that is its own mapping, returned to the OS when freed), and the baseline is taken after
imports and a warm-up step, when the kernel's peak-RSS mark is reset. The test asserts the live-tensor figure, not
RSS: on a fresh CI machine RSS once read one case 34% above the prediction while every rerun here matched it.
A saved-tensor hook also counts what autograd stores for backward (plus the logits the forward returns), which is
compared with the planner's activation terms.

CPU vs GPU accounting: the runs are fp32 (4 B weights, 4 B grads, 8 B AdamW states, no master copy: 16 B/param, the
same as bf16 mixed precision's 2 + 2 + 12), with Hugging Face's eager RMSNorm and SDPA's flash path, and gradients
allocated in backward and freed by zero_grad(set_to_none=True): the planner is asked for exactly that
(dtype=float32, kernels=eager, grads=on_demand, no per-GPU CUDA overhead, no headroom). On a GPU, add the CUDA
context and workspaces (overhead_gb) and the caching allocator's reserve (part of the headroom).

Run: .venv/bin/python -m bench.planner_memory
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MMAP_THRESHOLD = "65536"
GOAL = 0.15  # the goal: measured within ±15% of predicted


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # "tiny" (fieldkit.tiny_model) or "medium" (a random-weight Qwen2 sized for this box)
    method: str  # full | lora
    seq: int
    micro_batch: int
    checkpointing: bool = False


CASES = [
    Case("tiny full", "tiny", "full", 1024, 4),
    Case("tiny lora", "tiny", "lora", 1024, 4),
    Case("medium full", "medium", "full", 256, 2),
    Case("medium lora", "medium", "lora", 256, 2),
    Case("medium lora + checkpointing", "medium", "lora", 256, 2, checkpointing=True),
]
MEDIUM = {  # ~63M parameters: large enough that weights and states dominate RSS noise, small enough for 2 cores
    "hidden_size": 512,
    "intermediate_size": 2816,  # 5.5 x hidden, Qwen2.5's SwiGLU ratio
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Linux >= 4.0: set VmHWM to the current RSS, so what imports and warm-up peaked at is not counted."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


class LiveTensorPeak:
    """A dispatch mode that follows every tensor storage ops create (forward, backward and optimizer) until it is
    freed, and keeps the peak of their total bytes. Storages alive before it starts (the weights) are passed in."""

    def __init__(self, existing: Any) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves
        from torch.utils.weak import WeakIdKeyDictionary

        self.live = WeakIdKeyDictionary()  # storage -> its bytes; an entry goes when its storage is freed
        self.current = 0
        self.peak = 0
        for tensor in existing:
            self._add(tensor.untyped_storage())
        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                for leaf in tree_leaves(out):
                    if isinstance(leaf, torch.Tensor):
                        tracker._add(leaf.untyped_storage())
                return out

        self.mode = Mode()

    def _add(self, storage: Any) -> None:
        if storage in self.live:  # a view, or an op that wrote in place
            return
        nbytes = storage.nbytes()
        self.live[storage] = nbytes
        weakref.finalize(storage, self._free, nbytes)
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes


def build_model(case: Case) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if case.model == "tiny":
        from fieldkit.tiny_model import build_tiny_model

        path = build_tiny_model(REPO / "runs" / "models")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    else:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(**MEDIUM, attn_implementation="sdpa")).float()
    if case.method == "lora":
        from peft import LoraConfig, get_peft_model

        from fieldkit.config import LoraConfig as RunLora

        defaults = RunLora()  # the project's defaults: r=16, alpha 32, dropout 0.05, all seven projections
        lora = LoraConfig(
            r=defaults.rank,
            lora_alpha=defaults.alpha,
            lora_dropout=defaults.dropout,
            target_modules=defaults.target_modules,
        )
        model = get_peft_model(model, lora)
    if case.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if case.method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model


def warm_up() -> None:
    """One step of a throwaway model, so kernel libraries are loaded before the baseline is taken."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        attn_implementation="sdpa",
    )
    model = Qwen2ForCausalLM(config)
    ids = torch.randint(0, 64, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.AdamW(model.parameters()).step()


def measure(case: Case) -> dict[str, Any]:
    """In this (fresh) process: peak RSS over two training steps, and autograd's saved bytes in the second."""
    import torch

    torch.set_num_threads(2)
    warm_up()
    baseline = rss_bytes()
    reset_peak_rss()
    model = build_model(case)
    config = (model.get_base_model() if case.method == "lora" else model).config.to_dict()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, foreach=False)  # CPU AdamW runs per tensor either way
    ids = torch.randint(
        0, config["vocab_size"], (case.micro_batch, case.seq), generator=torch.Generator().manual_seed(0)
    )
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    tracker = LiveTensorPeak(existing=[*model.parameters(), *model.buffers()])
    with tracker.mode:
        for _ in range(2):
            saved.clear()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                out = model(input_ids=ids, labels=ids)
            saved.setdefault(out.logits.untyped_storage().data_ptr(), out.logits.untyped_storage().nbytes())
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del out
    return {
        "peak_bytes": tracker.peak,
        "rss_peak_bytes": peak_rss_bytes() - baseline,
        "saved_bytes": sum(saved.values()),
        "config": config,
    }


def predict(case: Case, config: dict[str, Any]) -> dict[str, float]:
    """The planner's figures for the same shape, asked for what the CPU run does."""
    from fieldkit.capabilities.architecture import ModelArch
    from fieldkit.capabilities.catalog import Hardware
    from fieldkit.capabilities.layouts import Layout, LayoutSearch
    from fieldkit.capabilities.memory import learner_terms
    from fieldkit.capabilities.request import PlanRequest

    arch = ModelArch.from_hf_config(config, name=case.model)
    req = PlanRequest.build(
        method=case.method,
        seq=case.seq,
        micro_batch=case.micro_batch,
        dtype="float32",
        device="cpu",
        kernels="eager",
        grads="on_demand",
        recompute="full" if case.checkpointing else "none",
        overhead_gb=0,
        headroom=0,
    )
    host = Hardware(
        name="cpu",
        label="this box",
        memory_gb=1000,
        bandwidth_gbs=1,
        interconnect="-",
        interconnect_gbs=1,
        bf16_tflops=1,
        gpus_per_node=1,
    )
    terms = learner_terms(arch, req)
    fit = LayoutSearch(arch, host, req, terms, []).evaluate(Layout(1, 1, 1, 0))
    activations = sum(t.bytes for t in terms if t.kind == "activations")
    return {"peak_bytes": fit.peak_bytes, "activation_bytes": activations}


def _measure_in_subprocess(case: Case) -> dict[str, Any]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.planner_memory", "--measure", json.dumps(asdict(case))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{case.name}: measurement failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(case: Case) -> dict[str, Any]:
    from fieldkit.tiny_model import build_tiny_model

    build_tiny_model(REPO / "runs" / "models")  # here: building inside a measured process would count in its peak
    measured = _measure_in_subprocess(case)
    predicted = predict(case, measured["config"])
    return {
        "case": case.name,
        "measured_peak_mb": measured["peak_bytes"] / 1e6,
        "rss_peak_mb": measured["rss_peak_bytes"] / 1e6,
        "predicted_peak_mb": predicted["peak_bytes"] / 1e6,
        "peak_ratio": measured["peak_bytes"] / predicted["peak_bytes"],
        "measured_saved_mb": measured["saved_bytes"] / 1e6,
        "predicted_activations_mb": predicted["activation_bytes"] / 1e6,
        "activation_ratio": measured["saved_bytes"] / predicted["activation_bytes"],
        "checkpointing": case.checkpointing,
    }


def main(cases: list[Case] | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    rows = [run_case(case) for case in cases or CASES]
    table = Table(
        "case",
        "live-tensor peak MB",
        "predicted MB",
        "measured/predicted",
        "peak RSS MB",
        "saved MB",
        "pred. act. MB",
        "ratio",
        title="planner memory model vs CPU training (peak of live tensors; peak RSS above a warm baseline)",
    )
    for row in rows:
        saved_ratio = "n/a (checkpointing)" if row["checkpointing"] else f"{row['activation_ratio']:.3f}"
        table.add_row(
            row["case"],
            f"{row['measured_peak_mb']:.1f}",
            f"{row['predicted_peak_mb']:.1f}",
            f"{row['peak_ratio']:.3f}",
            f"{row['rss_peak_mb']:.1f}",
            f"{row['measured_saved_mb']:.1f}",
            f"{row['predicted_activations_mb']:.1f}",
            saved_ratio,
        )
    Console(width=150).print(table)
    within = all(abs(row["peak_ratio"] - 1) <= GOAL for row in rows)
    print(f"goal ±{GOAL:.0%} on peak memory: {'met' if within else 'NOT met'} for every case")
    return {"cases": rows, "goal_met": within}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:  # the child process of run_case
        print(json.dumps(measure(Case(**json.loads(sys.argv[2])))))
    else:
        main()
