"""`fieldkit rag eval`: the embedded data is consistent, malformed files are refused by line, and the command runs
end to end (real BM25 + dense retrieval, Ray tasks, SmolLM2-135M served by `fieldkit serve`'s application on the hf
engine as policy and judge, the lineage store). Kept small: 2 questions, one reranked variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.rag.records import RagDataError, default_data, load_corpus, load_pairs, load_questions

REPO = Path(__file__).resolve().parent.parent


def test_embedded_defaults_are_checkable_and_grounded() -> None:
    corpus = load_corpus(default_data("corpus.jsonl"))
    questions = load_questions(default_data("questions.jsonl"), corpus)
    pairs = load_pairs(default_data("pairs.jsonl"))
    assert len(questions) >= 44 and len(pairs) >= 200
    by_id = {p.id: p for p in corpus}
    for q in questions:  # every checked value is in a gold passage: the answer is in the corpus, exactly
        assert q.check and all(any(c in by_id[g].text for g in q.gold) for c in q.check), q.id
    assert not {q.id for q in questions} & {p.id for p in pairs}  # SFT never trains on a test fact


def test_malformed_files_name_the_line(tmp_path: Path) -> None:
    good = {"id": "a", "title": "t", "text": "LoRA adds 40.37 M parameters."}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps(good) + "\n\n" + '{"id": "b", "title": "t", "text": }\n')
    with pytest.raises(RagDataError, match=r"corpus.jsonl:3: not JSON"):
        load_corpus(corpus)
    corpus.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(RagDataError, match=r"corpus.jsonl:2: duplicate id 'a' \(first on line 1\)"):
        load_corpus(corpus)
    corpus.write_text(json.dumps(good) + "\n")
    questions = tmp_path / "questions.jsonl"
    q = {"id": "q1", "question": "How many?", "reference": "40.37 M.", "gold": ["a"]}
    questions.write_text(json.dumps(q) + "\n" + json.dumps({**q, "id": "q2", "gold": ["zz"]}) + "\n")
    with pytest.raises(RagDataError, match=r"questions.jsonl:2: gold passage\(s\) not in the corpus: zz"):
        load_questions(questions, load_corpus(corpus))
    pairs = tmp_path / "pairs.jsonl"
    chat = {"id": "p1", "messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    pairs.write_text(json.dumps(chat) + "\n" + json.dumps({"id": "p2", "question": "Q?"}) + "\n")
    with pytest.raises(RagDataError, match=r"pairs.jsonl:2: qapair: answer: required field is missing"):
        load_pairs(pairs)

    # the commands say the same, and exit 2 before starting anything
    config = tmp_path / "rag.yaml"
    config.write_text(yaml.safe_dump({"rag": {"corpus": str(tmp_path / "bad.jsonl")}}))
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n[1, 2]\n")
    result = CliRunner().invoke(app, ["rag", "eval", "--config", str(config)])
    assert result.exit_code == 2 and "bad.jsonl:2: expected a JSON object" in result.output
    result = CliRunner().invoke(app, ["sft", "--pairs", str(pairs)])
    assert result.exit_code == 2 and "pairs.jsonl:2:" in result.output
    bad_variant = {"name": "x", "retriever": "bm"}
    config.write_text(yaml.safe_dump({"rag": {"k": 5, "candidates": 2, "variants": [bad_variant]}}))
    result = CliRunner().invoke(app, ["rag", "eval", "--config", str(config)])
    assert result.exit_code == 2
    assert "rag.variants.0.retriever = 'bm'" in result.output and "'bm25', 'dense', 'hybrid' or 'none'" in result.output


@pytest.mark.engine
@pytest.mark.ray
def test_rag_eval_end_to_end_on_ray_with_a_real_judge(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    import ray
    from ray import serve

    from fieldkit.lineage import LineageStore

    questions = load_questions(default_data("questions.jsonl"), load_corpus(default_data("corpus.jsonl")))
    # a question too long for the 1024-token context: the endpoint refuses it (400), Ray retries, it is reported
    too_long = questions[1].model_copy(update={"id": "too-long", "question": "Why? " * 2000})
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(q.model_dump_json() + "\n" for q in [questions[0], too_long]))
    config = tmp_path / "rag.yaml"
    config.write_text(yaml.safe_dump({
        "run_name": "rag-test",
        "model": {"name_or_path": "smollm2-135m", "engine": "hf", "max_model_len": 1024},
        "paths": {"runs_dir": str(tmp_path / "runs"), "models_dir": str(REPO / "runs" / "models"),
                  "lineage_db": str(tmp_path / "lineage.db")},
        "serve": {"port": free_port(), "app_name": "rag-test"},
        "rag": {"questions": str(qfile), "k": 2, "candidates": 3, "calibration_questions": 1,
                "relevance_questions": 1, "task_retries": 1, "max_tokens": 24,
                "variants": [{"name": "rerank-rag", "retriever": "hybrid", "rerank": True}]},
    }))  # fmt: skip
    try:
        result = CliRunner().invoke(app, ["rag", "eval", "--config", str(config), "--json"])
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    calibration = summary["calibration"]
    assert calibration["items"] == 4 and calibration["agreed"] + calibration["unjudged"] <= 4
    assert calibration["flagged"] == (calibration["agreement"] is None or calibration["agreement"] < 0.75)
    [variant] = summary["variants"]
    assert variant["questions"] == 2 and variant["failed"] == 1
    assert variant["estimates"]["hit_at_k"]["n"] == 1  # the failed question is in no mean, not a zero

    out = tmp_path / "runs" / "rag-test" / "rag"
    rows = {r["question_id"]: r for r in map(json.loads, (out / "questions.jsonl").read_text().splitlines())}
    assert rows["too-long"]["status"] == "failed" and "ContextLengthError" in rows["too-long"]["error"]
    ok = rows[questions[0].id]
    assert ok["status"] == "ok" and ok["answer"] and len(ok["retrieved"]) == 3 and len(ok["contexts"]) == 2
    assert ok["contexts"] == ok["retrieved"][:2]  # the model is given the best k after reranking
    assert len(ok["useful"]) == 2  # one context-precision verdict per passage given
    for name in ("report.md", "report.json", "variants.png"):
        assert (out / name).stat().st_size > 0
    assert "agreement" in (out / "report.md").read_text()
    [trial] = LineageStore(tmp_path / "lineage.db").trials("rag-test")
    assert trial.kind == "eval" and trial.metrics["rag.failed"] == 1 and trial.artifacts["questions"]


@pytest.mark.parametrize("name", ["qa-smollm2.yaml", "rag-smollm2.yaml"])
def test_the_shipped_rag_and_qa_configs_load(name: str) -> None:
    from fieldkit.rag.config import QaConfig, RagConfig, load_with_section

    path = Path(__file__).resolve().parent.parent / "deploy" / "configs" / "rag" / name
    section, kind = ("qa", QaConfig) if name.startswith("qa") else ("rag", RagConfig)
    config, parsed = load_with_section(path, section, kind, {})
    assert config.model.name_or_path == "smollm2-135m" and config.run_name == name.removesuffix(".yaml")
    if isinstance(parsed, RagConfig):  # the adapter variants read what the shipped SFT config writes
        assert parsed.adapter == Path("runs/qa-smollm2/sft/adapter")
