"""The agent protocol: the system prompt, the task prompt, parsing a reply into an Action, formatting observations.

The rules (the reference's): each turn the model replies with exactly one fenced bash block whose first
non-comment line is the command, or with `TASK_COMPLETE` alone on a line, which wins over any code block. A bare
`echo "Task complete."` (and close variants) also means done, but the same text redirected to a file or piped into
`tee` is a real command. Anything else is a parse error: the episode goes on with a corrective hint.
"""

from __future__ import annotations

import re

from fieldkit.gym.records import Action, ExecResult
from fieldkit.gym.task import Task

OBSERVATION_LIMIT = 4000  # characters of stdout+stderr shown to the model

SYSTEM_PROMPT = """\
You are a shell agent working in a Linux workspace directory. Each turn, reply with exactly one fenced bash block
holding ONE command, for example:
```bash
ls -la
```
You will see its output as an OBSERVATION. Use relative paths only. No network commands, no editors (vi, nano):
write files with echo, printf, sed, cp, mv. When the task is done, reply with TASK_COMPLETE alone on a line."""

_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
_OPEN_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)
_SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
_DONE_LINE = re.compile(r"^[ \t]*TASK_COMPLETE[ \t]*$", re.MULTILINE)
# `echo "Task complete."` and close variants, with nothing after them: a redirect or a pipe makes it a command.
_DONE_ECHO = re.compile(
    r"""^echo(?:\s+-[neE]+)*\s+(["']?)\s*(?:the\s+)?(?:task[\s_-]*(?:is\s+|has\s+been\s+)?"""
    r"""(?:complete|completed|done|finished)|task_complete|all\s+done)\s*[.!]*\s*\1\s*;?$""",
    re.IGNORECASE,
)
_PROMPT_PREFIX = re.compile(r"^\$\s+")


def parse_action(text: str) -> Action:
    """Parse one model reply. Never raises: unparseable text becomes a parse_error Action with the reason."""
    if not isinstance(text, str):
        return Action(kind="parse_error", error=f"reply is {type(text).__name__}, not text")
    if _DONE_LINE.search(text):
        return Action(kind="done")
    blocks = _FENCE.findall(text)
    if not blocks:
        if _OPEN_FENCE.search(text):
            return Action(kind="parse_error", error="the code block is not closed with ```")
        return Action(kind="parse_error", error="no fenced ```bash block found")
    shell_blocks = [body for lang, body in blocks if lang.lower() in _SHELL_LANGS]
    if not shell_blocks:
        return Action(kind="parse_error", error=f"the code block is {blocks[0][0]!r}, not bash")
    if len(blocks) > 1:
        return Action(kind="parse_error", error=f"{len(blocks)} code blocks; send exactly one")
    command = first_command(shell_blocks[0])
    if command is None:
        return Action(kind="parse_error", error="the bash block holds no command")
    if is_done_echo(command):
        return Action(kind="done", command=command)
    return Action(kind="command", command=command)


def first_command(block: str) -> str | None:
    """The first line of a block that is neither blank nor a comment, without a leading `$ ` prompt."""
    for line in block.split("\n"):  # only "\n" ends a line, as for bash; splitlines() would also cut at U+2028
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return _PROMPT_PREFIX.sub("", stripped) or None
    return None


def is_done_echo(command: str) -> bool:
    return bool(_DONE_ECHO.match(command.strip()))


def format_observation(result: ExecResult, limit: int = OBSERVATION_LIMIT) -> str:
    """`OBSERVATION (exit N[, TIMED OUT])`, then stdout, then stderr, cut to `limit` characters with a marker."""
    if result.error is not None:
        return f"OBSERVATION (sandbox error)\n{result.error[:limit]}"
    header = f"OBSERVATION (exit {result.exit_code}{', TIMED OUT' if result.timed_out else ''})"
    body = result.stdout
    if result.stderr:
        body += ("" if not body or body.endswith("\n") else "\n") + result.stderr
    if result.output_truncated:
        body += "\n[output over the sandbox cap was dropped]"
    if len(body) > limit:
        body = body[:limit] + f"\n[truncated: {len(body) - limit} more characters]"
    return f"{header}\n{body}" if body else f"{header}\n(no output)"


def format_parse_error(action: Action) -> str:
    """The corrective hint sent instead of an observation when a reply could not be parsed."""
    return (
        f"PARSE ERROR: {action.error}. Reply with exactly one ```bash block holding one command, "
        "or TASK_COMPLETE alone on a line when the task is done."
    )


def task_prompt(task: Task) -> str:
    """The first user message of an episode."""
    return f"You are helping a {task.persona.role}. {task.persona.context}\n\nTask: {task.intent}"


def initial_messages(task: Task) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": task_prompt(task)}]
