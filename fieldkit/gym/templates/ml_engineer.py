"""ml-engineer: experiment run directories with config YAMLs, training logs and eval JSONs, some of them strays."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "ml-engineer"

MODELS = ["resnet50", "vit-small", "bert-base", "t5-small", "llama-1b", "whisper-tiny"]
DATASETS = ["imagenet-1k", "cifar100", "glue-sst2", "squad-v2", "librispeech", "wikitext-103"]
OPTIMIZERS = ["adamw", "sgd", "lion"]


@dataclass
class World:
    ws: Workspace
    model: str
    runs: list[str]  # run directories
    stray_evals: list[str]  # eval JSONs dumped at the top level
    diverged: str  # the run whose log has NaN losses
    base_config: str
    lr: str
    wandb: list[str]


def _config(model: str, dataset: str, lr: str, batch: int, optimizer: str, seed: int) -> str:
    return (
        f"model: {model}\ndataset: {dataset}\noptimizer: {optimizer}\nlearning_rate: {lr}\n"
        f"batch_size: {batch}\nepochs: 10\nseed: {seed}\nprecision: bf16\n"
    )


def _log(rng: random.Random, steps: int, diverge: bool) -> str:
    lines, loss = [], rng.uniform(2.0, 4.0)
    for step in range(100, 100 * steps + 1, 100):
        loss = loss * rng.uniform(0.85, 0.98)
        shown = "nan" if diverge and step > 100 * (steps // 2) else f"{loss:.4f}"
        lines.append(f"step={step} loss={shown} lr={rng.choice(['3e-4', '2.9e-4', '2.7e-4'])}")
        if diverge and shown == "nan" and "NaN detected" not in "".join(lines):
            lines.append(f"WARN NaN detected at step {step}, skipping batch")
    lines.append("training finished")
    return "\n".join(lines) + "\n"


def build(rng: random.Random) -> World:
    ws = Workspace()
    model, dataset = rng.choice(MODELS), rng.choice(DATASETS)
    lr = rng.choice(["1e-3", "3e-4", "5e-4", "1e-4"])
    ws.text("configs/base.yaml", _config(model, dataset, lr, 64, "adamw", 0))
    n_runs = rng.randint(3, 5)
    runs, stray_evals = [], []
    diverged_index = rng.randrange(n_runs)
    for i in range(n_runs):
        run_lr, batch = rng.choice(["1e-3", "3e-4", "1e-4"]), rng.choice([32, 64, 128])
        run = f"runs/{model}_lr{run_lr}_bs{batch}_s{i}"
        runs.append(run)
        ws.text(f"{run}/config.yaml", _config(model, dataset, run_lr, batch, rng.choice(OPTIMIZERS), i))
        ws.text(f"{run}/train.log", _log(rng, rng.randint(8, 14), diverge=i == diverged_index))
        evaluation = {"run": run.split("/")[1], "dataset": dataset, "accuracy": round(rng.uniform(0.6, 0.93), 4)}
        if i == diverged_index:
            evaluation["accuracy"] = None
            evaluation["status"] = "diverged"
        eval_json = json.dumps(evaluation, indent=2) + "\n"
        if i < 2:  # the first two evals were dumped at the top level by a notebook
            stray_evals.append(ws.text(f"eval_{run.split('/')[1]}.json", eval_json))
        else:
            ws.text(f"{run}/eval.json", eval_json)
    wandb = [ws.text(f"wandb/run-2024{rng.randint(1001, 1231)}_{k}/logs/debug.log", "wandb: syncing\n") for k in "ab"]
    ws.text("scripts/train.py", f"import torch\n\n\ndef main():\n    print('training {model}')\n")
    ws.text("scripts/evaluate.py", "import json\n\n\ndef evaluate(run):\n    return json.load(open(run))\n")
    ws.text("README.md", f"# {model} on {dataset}\n\nBaseline learning rate: {lr}\n")
    return World(ws, model, runs, stray_evals, runs[diverged_index], "configs/base.yaml", lr, wandb)


def file_stray_eval(w: World, rng: random.Random) -> Draft:
    i = rng.randrange(len(w.stray_evals))
    return f.rename(w.ws, w.stray_evals[i], f"{w.runs[i]}/eval.json", " next to the run it belongs to")


def change_learning_rate(w: World, rng: random.Random) -> Draft:
    new = rng.choice([lr for lr in ("2e-4", "6e-4", "5e-5", "2e-3") if lr != w.lr])
    return f.edit(w.ws, w.base_config, f"learning_rate: {w.lr}", f"learning_rate: {new}", " for the next sweep")


def nan_report(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return f.count_matches(w.ws, "loss=nan", f"{w.diverged}/train.log", "reports/nan_steps.txt")
    return f.grep_files(w.ws, "nan", "runs", "reports/nan_runs.txt", " so I know which runs diverged")


def backup_config(w: World, rng: random.Random) -> Draft:
    run = rng.choice(w.runs)
    if rng.random() < 0.5:
        return f.copy(w.ws, f"{run}/config.yaml", "configs/best.yaml", " to reuse it as the new default")
    return f.extract(w.ws, f"{run}/train.log", 4, f"{run}/tail.log", "tail")


def drop_wandb(w: World, rng: random.Random) -> Draft:
    keep = rng.choice([f"{r}/config.yaml" for r in w.runs])
    return f.delete_tree(w.ws, "wandb", keep, " (the runs are synced already)")


def consolidate_evals(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Consolidate the eval results:",
        [
            *(f.rename(w.ws, e, f"{r}/eval.json") for e, r in zip(w.stray_evals, w.runs, strict=False)),
            f.find_list(w.ws, ".yaml", "reports/configs.txt"),
            f.delete_tree(w.ws, "wandb", "README.md"),
        ],
    )


def quarantine_diverged(w: World, rng: random.Random) -> Draft:
    name = w.diverged.split("/")[1]
    good = rng.choice([r for r in w.runs if r != w.diverged])
    return f.composite(
        "One run diverged; quarantine it and keep the good config:",
        [
            f.rename(w.ws, w.diverged, f"runs_failed/{name}"),
            f.append(w.ws, "README.md", f"- {name} diverged (NaN loss); moved to runs_failed/"),
            f.copy(w.ws, f"{good}/config.yaml", "configs/best.yaml"),
        ],
    )


def sweep_setup(w: World, rng: random.Random) -> Draft:
    lrs = pick(rng, ["1e-3", "5e-4", "3e-4", "1e-4"], 2)
    return f.composite(
        "Set up the next learning-rate sweep:",
        [
            f.make_dirs(w.ws, [f"sweeps/lr{lr}" for lr in lrs]),
            f.copy(w.ws, w.base_config, "sweeps/base.yaml"),
            f.write(w.ws, "sweeps/README.md", ["# LR sweep", *(f"- lr {lr}" for lr in lrs)]),
            f.delete_tree(w.ws, "wandb", "README.md"),
        ],
    )


def reorganise_runs(w: World, rng: random.Random) -> Draft:
    keep_runs = [r for r in w.runs if r != w.diverged]
    return f.composite(
        "Reorganise the experiment folder:",
        [
            *(f.rename(w.ws, e, f"{r}/eval.json") for e, r in zip(w.stray_evals, w.runs, strict=False)),
            f.grep_files(w.ws, "nan", "runs", "reports/diverged.txt"),
            f.delete_tree(w.ws, "wandb", "README.md"),
            f.extract(w.ws, f"{keep_runs[-1]}/train.log", 3, "reports/final_steps.txt", "tail"),
            f.copy(w.ws, w.base_config, "archive/configs/base.yaml"),
        ],
    )


def handover(w: World, rng: random.Random) -> Draft:
    run = rng.choice([r for r in w.runs if r != w.diverged])
    return f.composite(
        "I am handing this project over; clean it up and leave notes:",
        [
            f.rename(w.ws, w.diverged, f"archive/failed/{w.diverged.split('/')[1]}"),
            f.copy(w.ws, f"{run}/config.yaml", "handover/config.yaml"),
            f.grep_lines(w.ws, "step=", [f"{run}/train.log"], "handover/loss_curve.txt"),
            f.delete_tree(w.ws, "wandb", "README.md"),
            f.write(w.ws, "handover/NOTES.md", ["# Handover", f"model: {w.model}", "see handover/config.yaml"]),
            f.make_dirs(w.ws, ["handover/checkpoints"]),
        ],
    )


RECIPES = (
    file_stray_eval,
    change_learning_rate,
    nan_report,
    backup_config,
    drop_wandb,
    consolidate_evals,
    quarantine_diverged,
    sweep_setup,
    reorganise_runs,
    handover,
)
