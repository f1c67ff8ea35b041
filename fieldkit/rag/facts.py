"""The embedded default data, generated from what this project computes and documents: `python -m fieldkit.rag.facts`
rewrites fieldkit/rag/data/ (corpus.jsonl, questions.jsonl, pairs.jsonl).

Facts come from the capability planner (learner memory per model and method, the fewest GPUs of each kind, LoRA
parameter counts, at the planner's default request) and from RunConfig (each field's default and its one-line
reason), so every answer is exact and checkable. README sections join the corpus as distractors. Questions (the RAG
test set) and Q&A pairs (the SFT set) come from the same facts but never the same fact: an adapter trained on the
pairs has seen the passages' style and neighbours, not the held-out numbers.

Answers are written in one voice (a "Short answer:" line, then the reason), so style similarity after SFT is visible.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from fieldkit.rag.records import Passage, QAPair, Question, write_jsonl

DATA_DIR = Path(__file__).parent / "data"
METHODS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
N_PAIRS = 240  # the field note trained on 231 pairs; a round number above it
CONFIG_QUESTIONS = 9  # config-default questions in the test set, beside 3 planner questions per model
README_INTRO_CHARS = 700  # each README section's opening, as a distractor passage


def _gpu_phrase(n: int | None, gpu: str) -> str:
    return f"{n} x {gpu.upper()}" if n is not None else f"no layout of {gpu.upper()} GPUs (up to 1024)"


def planner_facts() -> tuple[list[Passage], list[tuple[str, str, str, list[str], str]]]:
    """(passages, facts); a fact is (key, question, answer, check strings, gold passage id)."""
    from fieldkit.capabilities import PlanRequest, load_catalogue, make_plan

    catalogue = load_catalogue()
    passages: list[Passage] = []
    facts: list[tuple[str, str, str, list[str], str]] = []
    gpus = sorted(catalogue.hardware)
    for model in sorted(catalogue.models):
        for method, method_name in METHODS.items():
            plan = make_plan(catalogue, model, "h100", PlanRequest.build(method=method))
            counts = {"h100": plan.best.gpus if plan.best else None, **plan.other_gpus}
            pid = f"plan:{model}:{method}"
            memory = f"{plan.learner_total_gb:.1f}"
            terms = ", ".join(f"{t.name} {t.total_gb:.2f} GB" for t in plan.terms)
            fewest = "; ".join(f"{_gpu_phrase(counts.get(g), g)}" for g in gpus if g in counts)
            lora = ", LoRA rank 16 on all projections" if method != "full" else ""
            text = (
                f"{method_name} of {model} at the planner's defaults (sequence 2048, micro-batch 1, bf16{lora}): the "
                f"learner needs {memory} GB in all ({terms}). Fewest GPUs that hold it with 30% headroom: {fewest}."
            )
            if plan.lora_params:
                share = 100 * plan.lora_params / plan.params
                text += f" LoRA adds {plan.lora_params / 1e6:.2f} M trainable parameters ({share:.2f}% of the model)."
            passages.append(Passage(id=pid, title=f"{model} {method_name}", text=text, source="fieldkit plan"))
            facts.append(
                (
                    f"memory:{model}:{method}",
                    f"How much memory does the learner need for {method_name} of {model}?",
                    f"Short answer: {memory} GB. That is the planner's total for {method_name} of {model} at its "
                    f"defaults, before the 30% headroom.",
                    [memory],
                    pid,
                )
            )
            for gpu in gpus:
                n = counts.get(gpu)
                if n is None:
                    continue
                facts.append(
                    (
                        f"gpus:{model}:{method}:{gpu}",
                        f"How many {gpu.upper()} GPUs does {method_name} of {model} need?",
                        f"Short answer: {n}. The planner's fewest {gpu.upper()} GPUs for {method_name} of {model} is "
                        f"{n}, with 30% headroom on the busiest GPU.",
                        [str(n)],
                        pid,
                    )
                )
            if method == "lora" and plan.lora_params:
                millions = f"{plan.lora_params / 1e6:.2f}"
                facts.append(
                    (
                        f"loraparams:{model}",
                        f"How many trainable parameters does rank-16 LoRA add to {model}?",
                        f"Short answer: {millions} M. Rank 16 on all seven projections of {model} adds {millions} M "
                        f"trainable parameters.",
                        [millions],
                        pid,
                    )
                )
    return passages, facts


def config_facts() -> tuple[list[Passage], list[tuple[str, str, str, list[str], str]]]:
    """One passage per RunConfig section (every field's default and reason); one fact per plain-valued field."""
    from pydantic import BaseModel

    from fieldkit.config import RunConfig

    passages, facts = [], []
    for section, info in RunConfig.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        defaults = model()
        pid = f"config:{section}"
        lines = []
        for name, field in model.model_fields.items():
            value = getattr(defaults, name)
            if not isinstance(value, bool | int | float | str) or not field.description:
                continue
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"{section}.{name} defaults to {shown}: {field.description}.")
            facts.append(
                (
                    f"config:{section}.{name}",
                    f"What is the default of {section}.{name} in a fieldkit run config?",
                    f"Short answer: {shown}. {section}.{name} defaults to {shown}: {field.description}.",
                    [shown],
                    pid,
                )
            )
        if lines:
            title = f"RunConfig section {section}"
            passages.append(Passage(id=pid, title=title, text=" ".join(lines), source="fieldkit/config.py"))
    return passages, facts


def readme_passages(readme: Path) -> list[Passage]:
    """Each `## ` section's opening of README.md: real project prose the retriever must rank below the facts."""
    if not readme.exists():
        return []
    passages = []
    for n, block in enumerate(re.split(r"^## ", readme.read_text(encoding="utf-8"), flags=re.M)[1:]):
        heading, _, body = block.partition("\n")
        text = " ".join(body.split())[:README_INTRO_CHARS]
        if text:
            passages.append(Passage(id=f"readme:{n}", title=heading.strip(), text=text, source="README.md"))
    return passages


def build(readme: Path) -> tuple[list[Passage], list[Question], list[QAPair]]:
    plan_passages, plan_facts = planner_facts()
    config_passages, cfg_facts = config_facts()
    corpus = plan_passages + config_passages + readme_passages(readme)
    by_key = {key: (q, a, check, pid) for key, q, a, check, pid in plan_facts + cfg_facts}
    rng = random.Random(20)
    held = [k for k in by_key if k.startswith("memory:") and k.endswith(":lora")]
    held += [k for k in by_key if k.startswith("gpus:") and k.endswith(":full:h100")]
    held += [k for k in by_key if k.startswith("loraparams:")]
    numeric_config = [k for k in by_key if k.startswith("config:") and re.fullmatch(r"[\d.e-]+", by_key[k][2][0])]
    held += rng.sample(sorted(numeric_config), CONFIG_QUESTIONS)
    questions = [
        Question(id=key, question=q, reference=a, gold=[pid], check=check)
        for key in held
        for q, a, check, pid in [by_key[key]]
    ]
    rest = sorted(set(by_key) - set(held))
    pairs = [
        QAPair(id=key, question=by_key[key][0], answer=by_key[key][1], check=by_key[key][2])
        for key in sorted(rng.sample(rest, min(N_PAIRS, len(rest))))
    ]
    return corpus, questions, pairs


def main() -> None:
    corpus, questions, pairs = build(Path(__file__).resolve().parents[2] / "README.md")
    write_jsonl(DATA_DIR / "corpus.jsonl", list(corpus))
    write_jsonl(DATA_DIR / "questions.jsonl", list(questions))
    write_jsonl(DATA_DIR / "pairs.jsonl", list(pairs))
    print(f"{len(corpus)} passages, {len(questions)} questions, {len(pairs)} pairs -> {DATA_DIR}")


if __name__ == "__main__":
    main()
