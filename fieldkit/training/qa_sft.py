"""LoRA SFT on your own Q&A pairs, with a before/after report on a held-out split (`fieldkit sft --pairs`).

Training is the learner's SFT path (fieldkit.training.sft: chat template, loss on the answer tokens, TRL). Before
and after are the same model with its adapter off and on, greedy, on pairs it never trained on:
- refusal rate: fieldkit.rag.metrics.REFUSAL_PHRASES (a documented phrase list, no judge);
- accuracy: pairs with check strings (every check number/string in the reply);
- style similarity: cosine of all-MiniLM-L6-v2 embeddings of the reply and the reference answer.
The adapter directory it writes is what `fieldkit serve --adapter` and `fieldkit rag eval --adapter` take.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig
from fieldkit.rag.config import QaConfig
from fieldkit.rag.records import QAPair

SYSTEM = "You answer questions about the fieldkit-mesh project briefly."  # the RAG harness's no-context prompt
GENERATE_BATCH = 16


def split_pairs(pairs: Sequence[QAPair], holdout: float) -> tuple[list[QAPair], list[QAPair]]:
    """(train, held out) by a hash of each id: stable when pairs are added, reordered or removed."""
    train, held = [], []
    for pair in pairs:
        bucket = int(hashlib.sha256(pair.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if bucket < holdout else train).append(pair)
    if not train or not held:
        raise ValueError(f"holdout {holdout} leaves {len(train)} training and {len(held)} held-out pairs; need both")
    return train, held


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def generate(model: Any, tokenizer: Any, questions: Sequence[str], max_tokens: int) -> list[str]:
    """Greedy replies, batched with left padding."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    replies = []
    model.eval()
    for start in range(0, len(questions), GENERATE_BATCH):
        prompts = [
            tokenizer.apply_chat_template(chat(q), add_generation_prompt=True, tokenize=False)
            for q in questions[start : start + GENERATE_BATCH]
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        width = batch["input_ids"].shape[1]
        replies += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return replies


def score(replies: Sequence[str], pairs: Sequence[QAPair], embedder: Any, bootstrap: int, seed: int) -> dict:
    from fieldkit.rag.metrics import bootstrap_ci, is_correct, is_refusal

    checks = [is_correct(r, p.check) for r, p in zip(replies, pairs, strict=True)]
    values = {
        "refusal_rate": [float(is_refusal(r)) for r in replies],
        "accuracy": [float(c) for c in checks if c is not None],
        "style_similarity": embedder.similarity(list(replies), [p.answer for p in pairs]),
    }
    out = {}
    for name, vals in values.items():
        mean, low, high = bootstrap_ci(vals, bootstrap, seed)
        out[name] = {"mean": mean, "low": low, "high": high, "n": len(vals)}
    return out


def run_qa_sft(
    cfg: RunConfig, qa: QaConfig, pairs: Sequence[QAPair], out_dir: Path, progress: Callable[[int, int], None]
) -> dict[str, Any]:
    """Train, score before/after, write the adapter, report.json/report.md/replies.jsonl and a lineage trial."""
    from fieldkit.lineage import LineageStore, Trial
    from fieldkit.rag.retrieval import Embedder
    from fieldkit.training.lora_model import load_lora_model, resolve_model_path, save_adapter
    from fieldkit.training.sft import examples_from_chats, run_sft

    started = time.perf_counter()
    train, held = split_pairs(pairs, qa.holdout)
    held = held[: qa.eval_limit]
    model_path = resolve_model_path(cfg.model, cfg.paths.models_dir)
    model, tokenizer = load_lora_model(model_path, cfg.lora, dtype="float32", device="cpu")
    embedder = Embedder(cfg.paths.models_dir)
    questions = [p.question for p in held]
    with model.disable_adapter():
        before = generate(model, tokenizer, questions, qa.max_tokens)
    before_s = time.perf_counter() - started
    chats = [[*chat(p.question), {"role": "assistant", "content": p.answer}] for p in train]
    stats = run_sft(model, tokenizer, examples_from_chats(tokenizer, chats), cfg.sft, seed=cfg.seed,
                    device="cpu", progress=progress)  # fmt: skip
    after = generate(model, tokenizer, questions, qa.max_tokens)
    adapter_dir = out_dir / "adapter"
    save_adapter(model, adapter_dir)
    report = {
        "model": cfg.model.name_or_path,
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "lora_rank": cfg.lora.rank,
        "sft": stats,
        "before": score(before, held, embedder, 2000, cfg.seed),
        "after": score(after, held, embedder, 2000, cfg.seed),
        "wall_s": {"before_s": before_s, "train_s": stats["sft_s"], "total_s": time.perf_counter() - started},
        "adapter": str(adapter_dir),
    }
    (out_dir / "replies.jsonl").write_text(
        "".join(json.dumps({"id": p.id, "question": p.question, "reference": p.answer, "before": b, "after": a}) + "\n"
                for p, b, a in zip(held, before, after, strict=True)),
        encoding="utf-8",
    )  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    LineageStore(cfg.paths.lineage_db).record_trial(
        Trial(
            run_id=cfg.run_name,
            kind="sft",
            status="keep",
            hypothesis=f"LoRA SFT on {len(train)} Q&A pairs answers the held-out {len(held)} in their voice",
            metric_name="qa.style_similarity",
            metric=report["after"]["style_similarity"]["mean"],
            metrics={f"qa.{w}.{name}": v["mean"] for w in ("before", "after") for name, v in report[w].items()},
            config={"qa": qa.model_dump(mode="json"), "sft": cfg.sft.model_dump(), "lora": cfg.lora.model_dump()},
            wall=report["wall_s"],
            artifacts={"adapter": str(adapter_dir), "report": str(out_dir / "report.md")},
        )
    )
    return report


ROWS = {"refusal_rate": "refusals", "accuracy": "accuracy (checked)", "style_similarity": "style similarity"}


def interval(value: dict[str, Any]) -> str:
    if value["mean"] is None:
        return "-"
    return f"{value['mean']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# SFT on Q&A pairs: {report['model']}, LoRA r={report['lora_rank']}",
        "",
        f"{report['train_pairs']} training pairs, {report['held_out_pairs']} held out; "
        f"training {report['wall_s']['train_s']:.0f} s, whole run {report['wall_s']['total_s']:.0f} s.",
        "",
        "| held-out metric | before | after |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {interval(report['before'][n])} | {interval(report['after'][n])} |" for n, t in ROWS.items()]
    return "\n".join([*lines, "", "Means with bootstrap 95% intervals.", ""])
