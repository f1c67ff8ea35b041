"""The records every service exchanges about an episode. Pydantic, so they cross Ray actors and land on disk as JSON.

Token ids and the behaviour policy's log-probs travel with each turn: the learner never re-tokenises text, and can
compute importance ratios for off-policy (pipelined) steps. An episode's token sequence is, turn by turn,
`turn.prompt_token_ids` (context the model did not write: the first prompt, then each observation's chat-template
delta; loss mask 0) followed by `turn.response_token_ids` (what the model sampled; loss mask 1).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_workspace_path(path: str) -> str:
    """A workspace-relative POSIX path: not absolute, no `..`, not empty. Raises ValueError naming the path."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path or "\x00" in path:
        raise ValueError(f"path {path!r} must be relative to the workspace, without '..'")
    return path


class WorkspaceFile(Record):
    """One file of a task's seeded workspace: text with its content, or a zero-filled binary stub of a size."""

    path: str
    kind: Literal["text", "binary-stub"] = "text"
    content: str | None = None
    size: int | None = Field(None, ge=0)

    @field_validator("path")
    @classmethod
    def _relative_path(cls, path: str) -> str:
        return check_workspace_path(path)

    @model_validator(mode="after")
    def _content_matches_kind(self) -> WorkspaceFile:
        if self.kind == "text" and self.content is None:
            raise ValueError(f"{self.path}: a text file needs content")
        if self.kind == "binary-stub" and self.size is None:
            raise ValueError(f"{self.path}: a binary-stub needs a size")
        return self


class WorkspaceSeed(Record):
    files: list[WorkspaceFile] = Field(default_factory=list)


class SnapshotEntry(Record):
    """One path of a workspace as it was at the end of an episode. Symlinks are recorded, never followed."""

    model_config = ConfigDict(extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")
    path: str
    kind: Literal["file", "dir", "symlink"]
    size: int = 0
    data: bytes | None = None  # file bytes up to the snapshot cap; None for dirs, symlinks and capped files
    truncated: bool = False  # the file was larger than the cap; `data` holds its first cap bytes
    link_target: str | None = None


class WorkspaceSnapshot(Record):
    """A workspace as data, so the grader can read it on another node."""

    entries: list[SnapshotEntry] = Field(default_factory=list)
    cap_bytes: int

    def entry(self, path: str) -> SnapshotEntry | None:
        wanted = PurePosixPath(path).as_posix()
        return next((e for e in self.entries if e.path == wanted), None)


class ExecResult(Record):
    """What one shell command did inside a sandbox."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    duration_s: float = 0.0
    output_truncated: bool = False  # a stream exceeded the sandbox's output cap and the rest was dropped
    error: str | None = None  # the sandbox itself failed (died, unreachable); not the command's own failure


class Action(Record):
    """A parsed model reply: one shell command, the done signal, or a reply that could not be parsed."""

    kind: Literal["command", "done", "parse_error"]
    command: str | None = None
    error: str | None = None


class AssertionResult(Record):
    kind: str
    path: str
    passed: bool
    detail: str = ""


class GradeResult(Record):
    passed: bool
    n_passed: int
    n_total: int
    assertions: list[AssertionResult] = Field(default_factory=list)
    score: float = Field(description="0.7*code + 0.3*rubric where rubric items exist, else n_passed/n_total")
    rubric_score: float | None = None  # the judge's mean rubric score, when the task has rubric items and was judged


StopReason = Literal["task_complete", "max_turns", "agent_error", "parse_error", "failed"]


class Turn(Record):
    index: int = Field(ge=0)
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    response_logprobs: list[float]
    response_text: str
    action: Action
    exec_result: ExecResult | None = None
    entropy: float | None = None  # mean per-token entropy from top-k log-probs (T2PO's TDS)
    regenerations: int = 0  # T2PO's turn-level dynamical sampling retries
    info_gain: float | None = None  # A2TGPO, raw (before turn-group normalisation)
    policy_version: int = -1  # the adapter version that sampled this reply (pipelined runs mix two); -1 = base
    # the sampling parameters of this reply; response_logprobs are of softmax(logits / temperature) (the default 1
    # is right for turns written before these fields: engines returned raw log-probs then)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> Turn:
        if len(self.response_logprobs) != len(self.response_token_ids):
            raise ValueError(
                f"turn {self.index}: {len(self.response_logprobs)} log-probs for "
                f"{len(self.response_token_ids)} response tokens"
            )
        return self


class Episode(Record):
    episode_id: str
    task_id: str
    group_id: str  # rollouts of the same prompt in the same step share it (the GRPO group)
    policy_version: int  # the adapter version that generated every turn (-1 = the base model)
    turns: list[Turn] = Field(default_factory=list)
    stop_reason: StopReason
    grade: GradeResult | None = None
    reward: float | None = None
    wall_s: float = 0.0
    failure: str | None = None  # why an engine or sandbox fault ended the episode (stop_reason "failed")

    @property
    def task_complete(self) -> bool:
        return self.stop_reason == "task_complete"
