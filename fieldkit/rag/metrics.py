"""Ragas-family metrics with an LLM judge on a rubric, plus answer checks, refusals and bootstrap intervals.

The formulas follow ragas' metric definitions; where a step there asks the judge to write JSON (decompose an answer
into statements, then verdicts), we ask one short question per item and read the verdict from the judge's first
token log-probs, G-Eval style (Liu et al. 2023): score = expected label under the judge's distribution over the
allowed labels. A small judge (SmolLM2-135M) cannot write ragas' JSON, but it always has a next-token distribution.
- faithfulness (ragas): supported statements / statements of the answer. Statements are the answer's sentences
  (ragas has the LLM rewrite them first; we split deterministically).
- answer relevance (ragas): mean cosine similarity between the question and questions the judge writes back from
  the answer (embeddings: all-MiniLM-L6-v2); 0 when the answer is noncommittal (ragas asks the LLM; we use the
  refusal phrase list below).
- context precision (ragas, with reference): average precision over the retrieved chunks of the judge's verdict
  "useful for the reference answer".
- context recall (ragas): reference sentences attributable to the retrieved context / reference sentences.
- correctness: the field note's 0-5 rubric (the reference answer is given to the judge), reported over 5.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

YES_NO = {"yes": 1.0, "no": 0.0}
GRADES = {str(n): float(n) for n in range(6)}

# A reply is a refusal when it holds one of these (lower-cased). The documented classifier of `fieldkit sft`'s
# refusal rate and of ragas' "noncommittal" flag.
REFUSAL_PHRASES = (
    "i don't know",
    "i do not know",
    "i'm not sure",
    "i am not sure",
    "i cannot",
    "i can't",
    "i'm unable",
    "i am unable",
    "not able to",
    "no information",
    "don't have information",
    "do not have information",
    "don't have access",
    "do not have access",
    "as an ai",
    "i'm sorry",
    "i apologize",
    "not provided",
    "no context",
    "cannot determine",
    "can't determine",
)


def is_refusal(text: str) -> bool:
    lowered = text.lower().replace("\u2019", "'")
    return not lowered.strip() or any(phrase in lowered for phrase in REFUSAL_PHRASES)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", re.I)


def is_correct(answer: str, check: Sequence[str]) -> bool | None:
    """Every check string is in the answer: numbers as numbers (35.5 matches '35.50 GB', not '135.5'), other strings
    case-insensitively. None when there is nothing to check."""
    if not check:
        return None
    numbers = [float(n) for n in _NUMBER.findall(answer.replace(",", ""))]
    for item in check:
        if _NUMBER.fullmatch(item):
            if not any(math.isclose(float(item), n, rel_tol=1e-9, abs_tol=1e-12) for n in numbers):
                return False
        elif item.lower() not in answer.lower():
            return False
    return True


def sentences(text: str) -> list[str]:
    """Sentence split on . ! ? followed by space (decimals like 35.5 stay whole); at least the text itself."""
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p.strip()]
    return parts or ([text.strip()] if text.strip() else [])


def label_score(top_logprobs: Sequence[Mapping[str, Any]], labels: Mapping[str, float]) -> float | None:
    """Expected label value under the judge's first-token distribution restricted to `labels` (token text stripped
    and lower-cased); None when no label is among the top alternatives (the verdict is missing, not zero)."""
    mass: dict[str, float] = {}
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().lower()
        if token in labels:
            mass[token] = mass.get(token, 0.0) + math.exp(float(entry["logprob"]))
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(labels[t] * p for t, p in mass.items()) / total


def _chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_prompt(question: str, contexts: Sequence[str]) -> list[dict[str, str]]:
    if not contexts:
        return _chat("You answer questions about the fieldkit-mesh project briefly.", question)
    numbered = "\n".join(f"[{i + 1}] {c}" for i, c in enumerate(contexts))
    return _chat(
        "You answer questions about the fieldkit-mesh project briefly, using only the context.",
        f"Context:\n{numbered}\n\nQuestion: {question}",
    )


def relevance_prompt(question: str, passage: str) -> list[dict[str, str]]:
    """The pointwise rerank question: the policy model's P(Yes) orders the candidates."""
    return _chat(
        "Answer Yes or No.", f"Passage: {passage}\n\nQuestion: {question}\n\nDoes the passage answer the question?"
    )


def supported_prompt(statement: str, context: str) -> list[dict[str, str]]:
    return _chat(
        "You check facts. Answer Yes or No.",
        f"Context: {context}\n\nStatement: {statement}\n\nIs the statement supported by the context?",
    )


def useful_prompt(question: str, reference: str, chunk: str) -> list[dict[str, str]]:
    return _chat(
        "Answer Yes or No.",
        f"Question: {question}\nAnswer: {reference}\n\nContext: {chunk}\n\nWas the context useful to reach the answer?",
    )


def question_from_answer_prompt(answer: str) -> list[dict[str, str]]:
    return _chat("Write one question that the given answer answers. Reply with the question only.", answer)


def correctness_prompt(question: str, reference: str, answer: str) -> list[dict[str, str]]:
    return _chat(
        "You grade answers from 0 (wrong) to 5 (fully correct). Reply with one digit.",
        f"Question: {question}\nReference answer: {reference}\nAnswer to grade: {answer}\n\nGrade (0-5):",
    )


def average_precision(verdicts: Sequence[float]) -> float:
    """ragas' context precision: sum over ranks k of precision@k * v_k, over the number of useful chunks."""
    useful = [1.0 if v >= 0.5 else 0.0 for v in verdicts]
    if not any(useful):
        return 0.0
    hits, total = 0.0, 0.0
    for k, v in enumerate(useful, start=1):
        hits += v
        total += v * hits / k
    return total / sum(useful)


def fraction_yes(verdicts: Sequence[float | None]) -> float | None:
    """Share of verdicts >= 0.5 among those the judge gave; None when it gave none."""
    given = [v for v in verdicts if v is not None]
    return sum(1.0 for v in given if v >= 0.5) / len(given) if given else None


def bootstrap_ci(values: Sequence[float], samples: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple:
    """(mean, low, high): the percentile interval of the mean over `samples` resamples (None x 3 for no values)."""
    import numpy as np

    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return None, None, None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    return float(data.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
