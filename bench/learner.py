"""Learner cost on the tiny model: a resident RL step against the reference's way (load the model, then step, at
every step), tokens/s, peak memory, `publish` (save + probe) against a bare save, and LoRA SFT of a demo-sized set.

Run: `python -m bench.learner [float32|bfloat16]` (the learner's dtype; default float32, what auto picks on CPU).
"""

from __future__ import annotations

import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fieldkit.config import RunConfig
from fieldkit.gym.records import Action, Episode, ExecResult, Turn
from fieldkit.rl.batch import build_train_batch
from fieldkit.rl.records import TrainBatch

GROUPS, GROUP_SIZE, TURNS = 4, 4, 3  # the default rollout shape: 4 tasks x 4 rollouts
PROMPT_TOKENS, RESPONSE_TOKENS = 96, 48
STEPS = 3
SFT_RECORDS = 42  # the reference SFT set: 17 passes + 25 near misses


def synthetic_groups(vocab: int, seed: int = 0) -> list[list[Episode]]:
    rng = random.Random(seed)

    def turn(index: int) -> Turn:
        return Turn(
            index=index,
            prompt_token_ids=[rng.randrange(3, vocab) for _ in range(PROMPT_TOKENS if index == 0 else 24)],
            response_token_ids=[rng.randrange(3, vocab) for _ in range(RESPONSE_TOKENS)],
            response_logprobs=[-rng.uniform(5, 9) for _ in range(RESPONSE_TOKENS)],
            response_text="",
            action=Action(kind="command", command="ls"),
            exec_result=ExecResult(exit_code=rng.choice([0, 1])),
        )

    return [
        [
            Episode(
                episode_id=f"g{g}-e{i}",
                task_id=f"t{g}",
                group_id=f"g{g}",
                policy_version=0,
                turns=[turn(t) for t in range(TURNS)],
                stop_reason="task_complete",
                reward=rng.random(),
            )
            for i in range(GROUP_SIZE)
        ]
        for g in range(GROUPS)
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(dtype: str = "float32") -> dict[str, float]:
    import torch

    from fieldkit.training.lora_model import save_adapter
    from fieldkit.training.sft import SftExample
    from fieldkit.training.trainer import LoraPolicyTrainer

    # one thread, as in the Learner actor (Ray sets OMP_NUM_THREADS to its num_cpus=1); more threads on a shared
    # CPU spin against each other
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig.model_validate({"model": {"learner_dtype": dtype}, "paths": {"runs_dir": tmp}})
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        trainer = LoraPolicyTrainer(config)
        load_s = time.perf_counter() - start
        batch: TrainBatch = build_train_batch(synthetic_groups(len(trainer.tokenizer)), config.algorithm)
        trainer.step(batch, 1)  # warm-up: first-call allocations
        resident = [trainer.step(batch, step) for step in range(2, STEPS + 2)]
        step_s = statistics.median(m["step_s"] for m in resident)
        tokens_per_s = statistics.median(m["tokens_per_s"] for m in resident)
        peak_mib = peak_rss_mib()

        # the reference's way: every step starts by loading the model
        start = time.perf_counter()
        LoraPolicyTrainer(config).step(batch, 1)
        reload_step_s = time.perf_counter() - start

        start = time.perf_counter()
        save_adapter(trainer.model, Path(tmp) / "bare")
        save_s = time.perf_counter() - start
        publish_times = []
        for _ in range(3):
            start = time.perf_counter()
            trainer.publish(trainer.at_step)  # a republished version replaces the older copy
            publish_times.append(time.perf_counter() - start)
        publish_s = statistics.median(publish_times)

        examples = [
            SftExample(token_ids=s.token_ids, assistant_mask=s.assistant_mask)
            for s in (batch.sequences * 3)[:SFT_RECORDS]
        ]
        sft = trainer.warm_start(examples)

    figures = {
        "load_s": load_s,
        "resident_step_s": step_s,
        "reload_then_step_s": reload_step_s,
        "reload_over_resident": reload_step_s / step_s,
        "tokens_per_s": tokens_per_s,
        "tokens_per_step": float(batch.n_tokens),
        "peak_rss_mib": peak_mib,
        "rss_growth_mib": peak_mib - rss_before,
        "save_s": save_s,
        "publish_s": publish_s,
        "publish_over_save": publish_s / save_s,
        "sft_s": sft["sft_s"],
        "sft_examples_per_s": SFT_RECORDS * config.sft.epochs / sft["sft_s"],
    }
    print(f"learner, tiny model, {dtype}, {len(batch.sequences)} sequences / {batch.n_tokens} tokens per step")
    print(f"{'measure':<44}{'value':>10}{'ratio':>9}  baseline")
    rows = [
        ("resident step (s)", step_s, 1.0, "itself"),
        ("load model + step, every step (s)", reload_step_s, reload_step_s / step_s, "resident step"),
        ("resident tokens/s", tokens_per_s, None, ""),
        ("peak RSS (MiB)", peak_mib, None, ""),
        ("save adapter (s)", save_s, 1.0, "itself"),
        ("publish = save + probe (s)", publish_s, publish_s / save_s, "save"),
        (f"LoRA SFT, {SFT_RECORDS} records x {config.sft.epochs} epoch (s)", sft["sft_s"], None, ""),
    ]
    for name, value, ratio, baseline in rows:
        shown = f"{ratio:>9.1f}" if ratio is not None else " " * 9
        print(f"{name:<44}{value:>10.3f}{shown}  {baseline}")
    return figures


if __name__ == "__main__":
    main(*sys.argv[1:2])
