"""The RAG harness's records (passages, questions, Q&A pairs) and their JSONL loaders.

Every loader names the file and the 1-based line of a bad record (not JSON, a missing or mistyped field, a duplicate
id, a gold passage the corpus lacks), so a 300-line file is fixed in one pass, not by bisection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


class RagDataError(ValueError):
    """A data file the harness cannot use; the message starts with `path:line:` when a line is at fault."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=ID_PATTERN)


class Passage(Record):
    title: str = Field(min_length=1)
    text: str = Field(min_length=1)
    source: str = Field("", description="where the passage comes from (the planner, a config field, a doc)")


class Question(Record):
    question: str = Field(min_length=1)
    reference: str = Field(min_length=1, description="the reference answer, one or more sentences")
    gold: list[str] = Field(min_length=1, description="ids of the passages that hold the answer")
    check: list[str] = Field(
        default_factory=list, description="strings a correct answer contains (all of them); empty: not checkable"
    )


class QAPair(Record):
    """One chat pair: a user question and the answer in the owner's voice. `{"messages": [...]}` (a user turn, then
    an assistant turn) is read into the same fields."""

    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    check: list[str] = Field(default_factory=list, description="strings a correct answer contains; empty: unchecked")

    @model_validator(mode="before")
    @classmethod
    def _from_messages(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "messages" not in data:
            return data
        messages = data["messages"]
        roles = [m.get("role") for m in messages] if isinstance(messages, list) else None
        if roles != ["user", "assistant"] or not all(isinstance(m.get("content"), str) for m in messages):
            raise ValueError(f"messages must be one user turn then one assistant turn with text (got roles {roles})")
        rest = {k: v for k, v in data.items() if k != "messages"}
        return {**rest, "question": messages[0]["content"], "answer": messages[1]["content"]}


R = TypeVar("R", bound=Record)


def describe(err: Any) -> str:
    """One pydantic problem: the dotted field, the value given and what is allowed."""
    field = ".".join(str(p) for p in err["loc"]) or "<record>"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{field}: required field is missing"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown field (value {err.get('input')!r})"
    return f"{field} = {err.get('input')!r}: {message}"


def read_jsonl(path: Path, kind: type[R]) -> Iterator[tuple[int, R]]:
    """(line number, record) for each non-blank line; RagDataError at the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RagDataError(f"{path}: cannot read: {exc}") from exc
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RagDataError(f"{path}:{number}: not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(data, dict):
            raise RagDataError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
        try:
            record = kind.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(describe(err) for err in exc.errors())
            raise RagDataError(f"{path}:{number}: {kind.__name__.lower()}: {problems}") from None
        if record.id in seen:
            raise RagDataError(f"{path}:{number}: duplicate id {record.id!r} (first on line {seen[record.id]})")
        seen[record.id] = number
        yield number, record
    if not seen:
        raise RagDataError(f"{path}: no records")


def load_corpus(path: Path) -> list[Passage]:
    return [p for _, p in read_jsonl(path, Passage)]


def load_questions(path: Path, corpus: list[Passage]) -> list[Question]:
    """Questions whose gold passages are all in `corpus` (a question with an unknown one is refused by line)."""
    known = {p.id for p in corpus}
    questions = []
    for number, question in read_jsonl(path, Question):
        missing = [g for g in question.gold if g not in known]
        if missing:
            raise RagDataError(f"{path}:{number}: gold passage(s) not in the corpus: {', '.join(missing)}")
        questions.append(question)
    return questions


def load_pairs(path: Path) -> list[QAPair]:
    return [p for _, p in read_jsonl(path, QAPair)]


def default_data(name: str) -> Path:
    """An embedded default file (corpus.jsonl, questions.jsonl, pairs.jsonl), written by fieldkit.rag.facts."""
    return Path(str(files("fieldkit.rag") / "data" / name))


def write_jsonl(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json(exclude_defaults=False) + "\n" for r in records), encoding="utf-8")
