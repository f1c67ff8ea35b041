"""The LLM persona synthesiser: an instruct model writes tasks for a persona's workspace; only proven tasks stay.

For each (persona, index) the persona's template builds a seeded workspace; the model sees the persona, its skill
focus, the workspace listing and one generated task as an example, and answers with a task draft constrained by a
strict JSON schema (the server's guided decoding). A draft becomes a Task only if it validates, and stays only if
its reference solution, run in a real sandbox, passes every assertion (the same oracle check the generator's
tasks pass). Every rejection is kept with its stage and reason.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError

from fieldkit.client import ChatClient, ChatError, StructuredOutputError
from fieldkit.gym.generator import generate_persona
from fieldkit.gym.oracle import Runner, check_task
from fieldkit.gym.personas import PersonaSpec, personas, skills
from fieldkit.gym.records import Record, WorkspaceFile, WorkspaceSeed
from fieldkit.gym.task import ASSERTION_KINDS, Persona, Task, difficulty_for_steps
from fieldkit.gym.templates import TEMPLATES
from fieldkit.gym.validate import describe_error

PATH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}){0,3}$"

SYSTEM = (
    "You design tasks for a shell agent that works in a user's workspace directory. Each task has an intent "
    "(the user's request, naming exact paths), a reference solution (one shell command per step, relative paths, "
    "no network, no editors), and assertions that check the final workspace: file_exists, file_not_exists, "
    "file_contents_contain (must_contain strings), file_contents_match_regex (Python re.search), file_unchanged. "
    "Reply with one JSON object matching the schema."
)


class SynthLimits(Record):
    """Bounds of a draft; they keep a guided generation finite (a weak model fills strings up to the cap)."""

    intent_chars: int = Field(240, ge=20)
    extra_files: int = Field(2, ge=0)
    file_chars: int = Field(200, ge=1)
    commands: int = Field(6, ge=1)
    command_chars: int = Field(120, ge=8)
    assertions: int = Field(6, ge=2)
    needle_chars: int = Field(60, ge=4)


def draft_schema(limits: SynthLimits) -> dict[str, Any]:
    """The JSON schema the model's reply must match (flat assertions: every field present, unused ones empty)."""
    path = {"type": "string", "pattern": PATH_PATTERN, "maxLength": 80}
    text = {"type": "string", "maxLength": limits.needle_chars}
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "minLength": 10, "maxLength": limits.intent_chars},
            "extra_files": {
                "type": "array",
                "maxItems": limits.extra_files,
                "items": {
                    "type": "object",
                    "properties": {"path": path, "content": {"type": "string", "maxLength": limits.file_chars}},
                    "required": ["path", "content"],
                    "additionalProperties": False,
                },
            },
            "solution": {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.commands,
                "items": {"type": "string", "minLength": 1, "maxLength": limits.command_chars, "pattern": r"^[^\n]+$"},
            },
            "assertions": {
                "type": "array",
                "minItems": 2,
                "maxItems": limits.assertions,
                "items": {
                    "type": "object",
                    "properties": {
                        "kind": {"enum": list(ASSERTION_KINDS)},
                        "path": path,
                        "must_contain": {"type": "array", "maxItems": 3, "items": text},
                        "regex": text,
                    },
                    "required": ["kind", "path", "must_contain", "regex"],
                    "additionalProperties": False,
                },
            },
            "skills": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"enum": list(skills())}},
        },
        "required": ["intent", "extra_files", "solution", "assertions", "skills"],
        "additionalProperties": False,
    }


class Rejection(Record):
    task_id: str
    stage: Literal["request", "json", "schema", "oracle"]
    reason: str


class SynthReport(Record):
    kept: list[Task] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)


def task_as_draft(task: Task) -> dict[str, Any]:
    """A task in the draft format (the few-shot example the model is shown)."""
    return {
        "intent": task.intent,
        "extra_files": [],
        "solution": task.reference_solution,
        "assertions": [
            {
                "kind": a.kind,
                "path": a.path,
                "must_contain": getattr(a, "must_contain", []),
                "regex": getattr(a, "regex", ""),
            }
            for a in task.verifiable_assertions
        ],
        "skills": task.skills_required,
    }


def prompt(spec: PersonaSpec, seed: WorkspaceSeed, example: Task) -> list[dict[str, str]]:
    listing = "\n".join(
        f"  {f.path}" + (f"  (binary, {f.size} bytes)" if f.kind == "binary-stub" else "") for f in seed.files
    )
    user = (
        f"Persona: {spec.role}. {spec.context}\nSkills to exercise: {', '.join(spec.skill_focus)}\n\n"
        f"The workspace:\n{listing}\n\nAn example task for another workspace of this persona:\n"
        f"{json.dumps(task_as_draft(example))}\n\nWrite one new task for this workspace."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def draft_to_task(draft: dict[str, Any], task_id: str, spec: PersonaSpec, seed: WorkspaceSeed) -> Task:
    """Raises ValidationError or ValueError when the draft is not a valid task."""
    solution = [str(c) for c in draft.get("solution", [])]
    assertions = []
    for item in draft.get("assertions", []):
        kind = item.get("kind")
        entry: dict[str, Any] = {"kind": kind, "path": item.get("path", "")}
        if kind == "file_contents_contain":
            entry["must_contain"] = item.get("must_contain", [])
        if kind == "file_contents_match_regex":
            entry["regex"] = item.get("regex", "")
        assertions.append(entry)
    extra = [WorkspaceFile(path=f["path"], kind="text", content=f["content"]) for f in draft.get("extra_files", [])]
    return Task.model_validate(
        {
            "task_id": task_id,
            "persona": Persona(role=spec.role, context=spec.context),
            "intent": draft.get("intent", ""),
            "workspace_seed": WorkspaceSeed(files=[*seed.files, *extra]),
            "skills_required": draft.get("skills", []),
            "verifiable_assertions": assertions,
            "difficulty": difficulty_for_steps(max(1, len(solution))),
            "estimated_steps": max(1, len(solution)),
            "reference_solution": solution,
        }
    )


def synthesise(
    client: ChatClient,
    runner: Runner,
    per_persona: int = 1,
    seed: int = 0,
    roles: Sequence[str] | None = None,
    temperature: float = 0.7,
    max_tokens: int = 1536,
    limits: SynthLimits | None = None,
) -> SynthReport:
    """Ask the model for `per_persona` drafts per persona; keep the tasks whose oracle passes."""
    limits = limits or SynthLimits()
    schema = draft_schema(limits)
    report = SynthReport()
    for spec in personas():
        if roles is not None and spec.role not in roles:
            continue
        example = generate_persona(spec, 1, seed)[0]
        for i in range(per_persona):
            task_id = f"synth-{spec.role}-{seed}-{i:03d}"
            workspace = TEMPLATES[spec.role].build(random.Random(f"clawgym-synth/{seed}/{spec.role}/{i}")).ws.seed()
            messages = prompt(spec, workspace, example)
            try:
                draft = client.chat_json(
                    messages,
                    schema,
                    schema_name="clawgym_task",
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed * 1000 + i,
                )
            except StructuredOutputError as exc:
                report.rejected.append(Rejection(task_id=task_id, stage="json", reason=str(exc)))
                continue
            except ChatError as exc:
                report.rejected.append(Rejection(task_id=task_id, stage="request", reason=str(exc)))
                continue
            try:
                task = draft_to_task(draft, task_id, spec, workspace)
            except ValidationError as exc:
                reason = "; ".join(describe_error(e) for e in exc.errors()[:5])
                report.rejected.append(Rejection(task_id=task_id, stage="schema", reason=reason))
                continue
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                report.rejected.append(Rejection(task_id=task_id, stage="schema", reason=repr(exc)))
                continue
            verdict = check_task(task, runner)
            if verdict.ok:
                report.kept.append(task)
            else:
                report.rejected.append(Rejection(task_id=task_id, stage="oracle", reason="; ".join(verdict.problems)))
    return report
