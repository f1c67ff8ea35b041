"""`fieldkit rag eval` on Ray: every (variant, question) and every judge calibration item is a Ray task calling an
OpenAI-compatible endpoint (the policy server behind `fieldkit serve`'s application, started here unless a base_url
is given). A task that raises is retried by Ray (rag.task_retries) on top of the client's own HTTP retries; one that
still fails is reported as failed and left out of every mean, never scored as zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fieldkit.config import RunConfig
from fieldkit.rag.config import RagConfig
from fieldkit.rag.judging import (
    CalibrationItem,
    EndpointSpec,
    QuestionJob,
    QuestionResult,
    calibration_items,
    judge_calibration_item,
    run_question,
)
from fieldkit.rag.records import default_data, load_corpus, load_questions
from fieldkit.rag.report import Calibration, VariantSummary, question_metrics, summarise, write_report

ADAPTER_ID = "rag-adapter"  # the adapter's model id on an endpoint started here
T = TypeVar("T")


def fan_out(
    fn: Callable[[Any], T], items: Sequence[Any], parallel: int, retries: int, done: Callable[[], None]
) -> list[T | BaseException]:
    """fn(item) for every item as Ray tasks, at most `parallel` in flight; a task's final error in its place."""
    import ray

    remote = ray.remote(num_cpus=0)(fn).options(max_retries=retries, retry_exceptions=True)  # HTTP-bound: no CPU
    results: list[T | BaseException] = [RuntimeError("not run")] * len(items)
    pending: dict[Any, int] = {}
    queue = list(enumerate(items))
    while queue or pending:
        while queue and len(pending) < parallel:
            index, item = queue.pop(0)
            pending[remote.remote(item)] = index
        ready, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready[0])
        try:
            results[index] = ray.get(ready[0])
        except Exception as exc:  # RayTaskError after the retries: reported, never scored
            results[index] = exc
        done()
    return results


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"


def start_or_connect(cfg: RunConfig, rag: RagConfig) -> tuple[EndpointSpec, EndpointSpec | None, Callable[[], None]]:
    """(base model spec, adapter spec or None, stop): the given endpoint, or `fieldkit serve`'s started here."""
    from fieldkit.client import ChatClient

    key = os.environ.get(rag.api_key_env)
    wants_adapter = any(v.adapter for v in rag.variants) and rag.adapter is not None
    if rag.base_url is not None:
        with ChatClient(rag.base_url, rag.model, api_key=key) as client:
            base = EndpointSpec(base_url=rag.base_url, model=client.resolve_model(), api_key=key)
        if rag.adapter_model is None:
            return base, None, lambda: None
        return base, EndpointSpec(base_url=rag.base_url, model=rag.adapter_model, api_key=key), lambda: None
    from services.serve import AdapterSource, start_endpoint, stop_endpoint
    from services.serve.launch import base_model_id

    sources = [AdapterSource(rag.adapter, ADAPTER_ID)] if wants_adapter and rag.adapter else []
    endpoint = start_endpoint(cfg, sources)
    served_key = cfg.serve.api_key.get_secret_value() if cfg.serve.api_key else key
    base = EndpointSpec(base_url=endpoint.base_url, model=base_model_id(cfg), api_key=served_key)
    adapter = EndpointSpec(base_url=endpoint.base_url, model=ADAPTER_ID, api_key=served_key) if sources else None
    return base, adapter, lambda: stop_endpoint(cfg.serve.app_name)


def run_rag_eval(
    cfg: RunConfig, rag: RagConfig, out_dir: Path, progress: Callable[[str, int], Callable[[], None]]
) -> tuple[list[VariantSummary], Calibration, list[str]]:
    """The whole evaluation; returns (summaries, calibration, notes). `progress(label, total)` returns a tick."""
    from fieldkit.lineage import LineageStore, Trial
    from fieldkit.rag.retrieval import Embedder, Index
    from services.cluster import connect

    started = time.perf_counter()
    corpus = load_corpus(rag.corpus or default_data("corpus.jsonl"))
    questions = load_questions(rag.questions or default_data("questions.jsonl"), corpus)[: rag.limit]
    embedder = Embedder(cfg.paths.models_dir)
    index = Index(corpus, embedder)
    by_id = {p.id: p for p in corpus}
    connect(cfg.resources.ray_address)
    base, adapter, stop = start_or_connect(cfg, rag)
    notes = []
    try:
        judge = EndpointSpec(
            base_url=rag.judge_base_url or base.base_url,
            model=rag.judge_model or base.model,
            api_key=os.environ.get(rag.api_key_env) if rag.judge_base_url else base.api_key,
        )
        items = calibration_items(questions, corpus, rag.calibration_questions)
        scores = fan_out(
            lambda item: judge_calibration_item(judge, item), items, rag.parallel, rag.task_retries,
            progress("judge calibration", len(items)),
        )  # fmt: skip
        calibration = calibrate(items, scores, rag.agreement_threshold, judge.model)
        variants = [v for v in rag.variants if not v.adapter or adapter is not None]
        k = rag.k
        notes += [f"variant {v.name} skipped: no rag.adapter given" for v in rag.variants if v not in variants]
        jobs = [
            QuestionJob(
                variant=v.name,
                question=q,
                candidates=[by_id[i] for i in index.search(q.question, v.retriever, rag.candidates if v.rerank else k)],
                k=rag.k,
                rerank=v.rerank,
                policy=adapter if v.adapter and adapter is not None else base,
                judge=judge,
                max_tokens=rag.max_tokens,
                relevance_questions=rag.relevance_questions,
            )
            for v in variants
            for q in questions
        ]
        outcomes = fan_out(run_question, jobs, rag.parallel, rag.task_retries, progress("questions", len(jobs)))
    finally:
        stop()
    results = [
        out if isinstance(out, QuestionResult)
        else QuestionResult(variant=job.variant, question_id=job.question.id, status="failed", error=_cause(out),
                            attempts=rag.task_retries + 1)
        for job, out in zip(jobs, outcomes, strict=True)
    ]  # fmt: skip

    def similarity(question: str, back: list[str]) -> float:
        return sum(embedder.similarity([question] * len(back), back)) / len(back)

    by_question = {q.id: q for q in questions}

    def scored(variant: str) -> list[tuple[QuestionResult, dict[str, float | None]]]:
        return [
            (r, question_metrics(r, by_question[r.question_id], rag.k, similarity) if r.status == "ok" else {})
            for r in results
            if r.variant == variant
        ]

    summaries = [summarise(v.name, scored(v.name), rag.bootstrap, cfg.seed) for v in variants]
    wall = time.perf_counter() - started
    written = write_report(out_dir, results, summaries, calibration, rag.k, wall)
    store = LineageStore(cfg.paths.lineage_db)
    first: str | None = None
    for summary in summaries:
        values = {f"rag.{n}": e.mean for n, e in summary.estimates.items() if e.mean is not None}
        trial = store.record_trial(
            Trial(
                run_id=cfg.run_name,
                kind="eval",
                status="baseline" if first is None else "keep",
                baseline_id=first,
                hypothesis=f"RAG variant {summary.variant} on {len(questions)} held-out questions",
                metric_name="rag.correctness",
                metric=summary.estimates["correctness"].mean,
                metrics={**values, "rag.failed": summary.failed, "judge.agreement": calibration.agreement},
                config={"rag": rag.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json")},
                wall={"questions_s": summary.wall_s},
                artifacts={"report": str(written[2]), "questions": str(written[0])},
                notes="judge below agreement threshold" if calibration.flagged else "",
            )
        )
        first = first or trial.trial_id
    return summaries, calibration, notes


def calibrate(
    items: Sequence[CalibrationItem], scores: Sequence[float | BaseException | None], threshold: float, judge: str
) -> Calibration:
    judged = [(i, s) for i, s in zip(items, scores, strict=True) if isinstance(s, float)]
    agreed = sum(1 for item, score in judged if (score >= 0.5) == item.expect_high)
    agreement = agreed / len(judged) if judged else None
    return Calibration(
        items=len(items),
        agreed=agreed,
        unjudged=len(items) - len(judged),
        agreement=agreement,
        threshold=threshold,
        flagged=agreement is None or agreement < threshold,
        judge=judge,
    )
