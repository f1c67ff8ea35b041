"""One question of one variant, end to end against OpenAI-compatible endpoints: rerank, answer, judge. And the
judge's calibration set. Plain Python over two ChatClients (no Ray): services.rag runs these as Ray tasks.

Every judge call asks for one token with its top log-probs (fieldkit.rag.metrics.label_score); a verdict the judge
does not give (no allowed label among its top tokens) is None and left out of the means, never counted as 0.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fieldkit.client import ChatClient
from fieldkit.rag import metrics
from fieldkit.rag.records import Passage, Question

TOP_LOGPROBS = 20  # the most the endpoint returns; a weak judge's label is often not its first choice


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str
    model: str
    api_key: str | None = None


class QuestionJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str
    question: Question
    candidates: list[Passage]  # retrieved, best first; rerank reorders them, then the first k are used
    k: int
    rerank: bool
    policy: EndpointSpec
    judge: EndpointSpec
    max_tokens: int
    relevance_questions: int


class QuestionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str
    question_id: str
    status: Literal["ok", "failed"] = "ok"
    error: str = ""
    attempts: int = 1
    retrieved: list[str] = Field(default_factory=list, description="passage ids, best first, before the cut to k")
    contexts: list[str] = Field(default_factory=list, description="ids of the k passages the model was given")
    answer: str = ""
    correct: bool | None = None
    faithful: list[float | None] = Field(default_factory=list, description="P(supported) per answer sentence")
    useful: list[float | None] = Field(default_factory=list, description="P(useful) per context chunk, in rank order")
    recalled: list[float | None] = Field(default_factory=list, description="P(attributable) per reference sentence")
    correctness: float | None = Field(None, description="the judge's expected 0-5 grade")
    back_questions: list[str] = Field(default_factory=list, description="questions the judge wrote from the answer")
    wall_s: float = 0.0


def verdict(client: ChatClient, messages: list[dict[str, str]], labels: dict[str, float]) -> float | None:
    reply = client.chat(messages, max_tokens=1, temperature=0.0, top_logprobs=TOP_LOGPROBS)
    content = (reply.raw["choices"][0].get("logprobs") or {}).get("content") or []
    return metrics.label_score(content[0].get("top_logprobs") or [], labels) if content else None


def rerank(client: ChatClient, question: str, passages: Sequence[Passage]) -> list[Passage]:
    """Candidates by the policy model's P(Yes) that the passage answers the question (ties keep retrieval order)."""
    scores = [verdict(client, metrics.relevance_prompt(question, p.text), metrics.YES_NO) for p in passages]
    order = sorted(range(len(passages)), key=lambda i: (-(scores[i] if scores[i] is not None else -1.0), i))
    return [passages[i] for i in order]


def run_question(job: QuestionJob) -> QuestionResult:
    started = time.perf_counter()
    q = job.question
    with (
        ChatClient(job.policy.base_url, job.policy.model, api_key=job.policy.api_key) as policy,
        ChatClient(job.judge.base_url, job.judge.model, api_key=job.judge.api_key) as judge,
    ):
        ranked = rerank(policy, q.question, job.candidates) if job.rerank else list(job.candidates)
        given = ranked[: job.k]
        answer = policy.chat(metrics.answer_prompt(q.question, [p.text for p in given]), max_tokens=job.max_tokens)
        text = answer.text.strip()
        context = "\n".join(p.text for p in given)
        result = QuestionResult(
            variant=job.variant,
            question_id=q.id,
            retrieved=[p.id for p in ranked],
            contexts=[p.id for p in given],
            answer=text,
            correct=metrics.is_correct(text, q.check),
        )
        if given:
            result.faithful = [
                verdict(judge, metrics.supported_prompt(s, context), metrics.YES_NO) for s in metrics.sentences(text)
            ]
            result.useful = [
                verdict(judge, metrics.useful_prompt(q.question, q.reference, p.text), metrics.YES_NO) for p in given
            ]
            result.recalled = [
                verdict(judge, metrics.supported_prompt(s, context), metrics.YES_NO)
                for s in metrics.sentences(q.reference)
            ]
        result.correctness = verdict(judge, metrics.correctness_prompt(q.question, q.reference, text), metrics.GRADES)
        if text and not metrics.is_refusal(text):
            result.back_questions = [
                judge.chat(metrics.question_from_answer_prompt(text), max_tokens=48, temperature=0.7, seed=n).text
                for n in range(job.relevance_questions)
            ]
    result.wall_s = time.perf_counter() - started
    return result


class CalibrationItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question_id: str
    kind: Literal["right", "wrong", "unfaithful"]
    metric: Literal["correctness", "faithfulness"]
    messages: list[dict[str, str]]
    expect_high: bool  # what a trustworthy judge says: a grade >= 2.5 of 5 / P(supported) >= 0.5


def _other_number(text: str, rng: random.Random) -> str:
    """`text` with each number changed (x 1.5 plus 1, same decimals): an answer known wrong, in the same words."""

    def change(match: re.Match[str]) -> str:
        digits = match.group(0)
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        return f"{float(digits) * 1.5 + rng.choice((1, 2, 3)):.{decimals}f}"

    return re.sub(r"\d+(?:\.\d+)?", change, text)


def calibration_items(questions: Sequence[Question], passages: Sequence[Passage], n: int) -> list[CalibrationItem]:
    """Per question: the reference graded (right), a same-words answer with other numbers graded (wrong), and the
    reference's and the changed answer's first sentence checked against the gold passage (faithful, unfaithful)."""
    rng = random.Random(0)
    by_id = {p.id: p for p in passages}
    items = []
    for q in [q for q in questions if re.search(r"\d", q.reference)][:n]:
        wrong = _other_number(q.reference, rng)
        context = "\n".join(by_id[g].text for g in q.gold)
        items += [
            CalibrationItem(question_id=q.id, kind="right", metric="correctness", expect_high=True,
                            messages=metrics.correctness_prompt(q.question, q.reference, q.reference)),
            CalibrationItem(question_id=q.id, kind="wrong", metric="correctness", expect_high=False,
                            messages=metrics.correctness_prompt(q.question, q.reference, wrong)),
            CalibrationItem(question_id=q.id, kind="right", metric="faithfulness", expect_high=True,
                            messages=metrics.supported_prompt(metrics.sentences(q.reference)[0], context)),
            CalibrationItem(question_id=q.id, kind="unfaithful", metric="faithfulness", expect_high=False,
                            messages=metrics.supported_prompt(metrics.sentences(wrong)[0], context)),
        ]  # fmt: skip
    return items


def judge_calibration_item(judge: EndpointSpec, item: CalibrationItem) -> float | None:
    """The judge's score of one item on its own scale normalised to 0-1 (None: no verdict)."""
    with ChatClient(judge.base_url, judge.model, api_key=judge.api_key) as client:
        if item.metric == "correctness":
            grade = verdict(client, item.messages, metrics.GRADES)
            return None if grade is None else grade / 5
        return verdict(client, item.messages, metrics.YES_NO)
