"""The RAG evaluation's results: per-variant means with bootstrap 95% intervals, the judge's calibration, per-question
JSONL, a Markdown report, a bar chart, and one lineage trial per variant."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fieldkit.rag import metrics
from fieldkit.rag.judging import QuestionResult
from fieldkit.rag.records import Question

# metric -> (title, scale shown): correctness is kept as the field note's 0-5 grade, the rest are shares
METRICS: dict[str, tuple[str, float]] = {
    "correctness": ("correctness (judge, /5)", 1.0),
    "accuracy": ("accuracy (checked)", 1.0),
    "faithfulness": ("faithfulness", 1.0),
    "answer_relevance": ("answer relevance", 1.0),
    "context_precision": ("context precision", 1.0),
    "context_recall": ("context recall", 1.0),
    "hit_at_k": ("hit@k", 1.0),
    "mrr": ("MRR", 1.0),
}


class Estimate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: float | None
    low: float | None
    high: float | None
    n: int


class VariantSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str
    questions: int
    failed: int
    estimates: dict[str, Estimate]
    wall_s: float


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int
    agreed: int
    unjudged: int
    agreement: float | None  # agreed / judged items
    threshold: float
    flagged: bool
    judge: str


def question_metrics(
    result: QuestionResult, question: Question, k: int, similarity: Callable[[str, list[str]], float]
) -> dict[str, float | None]:
    """One ok result's metric values (None: not applicable to this variant, or the judge gave no verdict)."""
    retrieval = bool(result.retrieved)
    relevance: float | None = 0.0  # ragas: a noncommittal answer scores 0
    if result.back_questions:
        relevance = similarity(question.question, result.back_questions)
    correct = result.correct
    return {
        "correctness": result.correctness,
        "accuracy": None if correct is None else float(correct),
        "faithfulness": metrics.fraction_yes(result.faithful) if retrieval else None,
        "answer_relevance": relevance,
        "context_precision": (
            metrics.average_precision([v for v in result.useful if v is not None])
            if retrieval and any(v is not None for v in result.useful)
            else None
        ),
        "context_recall": metrics.fraction_yes(result.recalled) if retrieval else None,
        "hit_at_k": float(bool(set(result.retrieved[:k]) & set(question.gold))) if retrieval else None,
        "mrr": _reciprocal_rank(result.retrieved, question.gold) if retrieval else None,
    }


def _reciprocal_rank(retrieved: Sequence[str], gold: Sequence[str]) -> float:
    return next((1.0 / rank for rank, pid in enumerate(retrieved, start=1) if pid in gold), 0.0)


def summarise(
    variant: str,
    rows: Sequence[tuple[QuestionResult, dict[str, float | None]]],
    bootstrap: int,
    seed: int,
) -> VariantSummary:
    ok = [values for result, values in rows if result.status == "ok"]
    estimates = {}
    for name in METRICS:
        values = [v[name] for v in ok if v[name] is not None]
        mean, low, high = metrics.bootstrap_ci(values, bootstrap, seed)  # type: ignore[arg-type]
        estimates[name] = Estimate(mean=mean, low=low, high=high, n=len(values))
    return VariantSummary(
        variant=variant,
        questions=len(rows),
        failed=sum(1 for result, _ in rows if result.status == "failed"),
        estimates=estimates,
        wall_s=sum(result.wall_s for result, _ in rows),
    )


def cell(estimate: Estimate, scale: float) -> str:
    if estimate.mean is None:
        return "-"
    ci = f" [{estimate.low * scale:.2f}, {estimate.high * scale:.2f}]" if estimate.low is not None else ""
    return f"{estimate.mean * scale:.2f}{ci}"


def render_markdown(summaries: Sequence[VariantSummary], calibration: Calibration, k: int, wall_s: float) -> str:
    lines = ["# RAG evaluation", ""]
    agreement = "-" if calibration.agreement is None else f"{100 * calibration.agreement:.0f}%"
    lines.append(
        f"Judge {calibration.judge}: agreement {agreement} on {calibration.items} calibration items "
        f"({calibration.unjudged} without a verdict; threshold {100 * calibration.threshold:.0f}%, chance 50%)."
    )
    if calibration.flagged:
        lines += ["", "**The judge is below the agreement threshold: its scores are not to be trusted.**"]
    lines += ["", "| metric | " + " | ".join(s.variant for s in summaries) + " |"]
    lines.append("|---" * (len(summaries) + 1) + "|")
    for name, (title, scale) in METRICS.items():
        shown = title.replace("hit@k", f"hit@{k}")
        lines.append(f"| {shown} | " + " | ".join(cell(s.estimates[name], scale) for s in summaries) + " |")
    lines.append("| failed questions | " + " | ".join(f"{s.failed}/{s.questions}" for s in summaries) + " |")
    lines.append("| question wall (s, summed) | " + " | ".join(f"{s.wall_s:.0f}" for s in summaries) + " |")
    lines += ["", f"Means with bootstrap 95% intervals; wall time of the whole evaluation {wall_s:.0f} s.", ""]
    return "\n".join(lines)


def bar_chart(summaries: Sequence[VariantSummary]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in METRICS if n != "correctness"]
    figure, axis = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(summaries))
    for i, summary in enumerate(summaries):
        est = [summary.estimates[n] for n in names]
        means = [e.mean or 0.0 for e in est]
        errors = [[m - (e.low or m) for m, e in zip(means, est, strict=True)],
                  [(e.high or m) - m for m, e in zip(means, est, strict=True)]]  # fmt: skip
        axis.bar([x + i * width for x in range(len(names))], means, width, yerr=errors, label=summary.variant)
    axis.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], [METRICS[n][0] for n in names], fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=8)
    axis.set_title("RAG variants (bootstrap 95% intervals)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def write_report(
    out_dir: Path,
    results: Sequence[QuestionResult],
    summaries: Sequence[VariantSummary],
    calibration: Calibration,
    k: int,
    wall_s: float,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    per_question = out_dir / "questions.jsonl"
    per_question.write_text("".join(r.model_dump_json() + "\n" for r in results), encoding="utf-8")
    report: dict[str, Any] = {
        "k": k,
        "wall_s": wall_s,
        "calibration": calibration.model_dump(),
        "variants": [s.model_dump() for s in summaries],
    }
    paths = [per_question, out_dir / "report.json", out_dir / "report.md", out_dir / "variants.png"]
    paths[1].write_text(json.dumps(report, indent=2), encoding="utf-8")
    paths[2].write_text(render_markdown(summaries, calibration, k, wall_s), encoding="utf-8")
    paths[3].write_bytes(bar_chart(summaries))
    return paths
