"""The agent protocol: the reply parser's rules (plus properties over arbitrary text) and observation formatting."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fieldkit.gym.protocol import (
    OBSERVATION_LIMIT,
    SYSTEM_PROMPT,
    format_observation,
    format_parse_error,
    is_done_echo,
    parse_action,
)
from fieldkit.gym.records import Action, ExecResult


def fenced(body: str, lang: str = "bash") -> str:
    return f"```{lang}\n{body}\n```"


@pytest.mark.parametrize(
    ("reply", "command"),
    [
        (fenced("ls -la"), "ls -la"),
        ("I will list the files.\n" + fenced("# look first\n\nls -la\nrm -rf x"), "ls -la"),
        (fenced("mv a.txt b.txt", "sh"), "mv a.txt b.txt"),
        (fenced("cat notes.md", ""), "cat notes.md"),
        (fenced("$ wc -l data.csv"), "wc -l data.csv"),
        ("  ```bash\n  grep -rn TODO src\n  ```", "grep -rn TODO src"),
        (fenced("echo 'Task complete.' > status.txt"), "echo 'Task complete.' > status.txt"),
        (fenced('echo "Task complete." >> log.txt'), 'echo "Task complete." >> log.txt'),
        (fenced('echo "Task complete." | tee done.txt'), 'echo "Task complete." | tee done.txt'),
        (fenced("echo TASK_COMPLETE > marker"), "echo TASK_COMPLETE > marker"),
    ],
)
def test_one_fenced_block_gives_its_first_command(reply: str, command: str) -> None:
    assert parse_action(reply) == Action(kind="command", command=command)


@pytest.mark.parametrize(
    "reply",
    [
        "TASK_COMPLETE",
        "All files are in place.\n\nTASK_COMPLETE\n",
        fenced("rm -rf build") + "\nTASK_COMPLETE",  # the done line wins over a code block
        fenced("TASK_COMPLETE"),
        "  TASK_COMPLETE  ",
    ],
)
def test_task_complete_alone_on_a_line_means_done(reply: str) -> None:
    assert parse_action(reply).kind == "done"


@pytest.mark.parametrize(
    "command",
    [
        'echo "Task complete."',
        "echo 'Task complete'",
        "echo Task complete.",
        'echo "TASK COMPLETE"',
        'echo "Task completed!"',
        'echo "The task is complete."',
        "echo task_complete",
        'echo -e "All done."',
    ],
)
def test_a_bare_done_echo_means_done(command: str) -> None:
    assert parse_action(fenced(command)).kind == "done"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I think the task is done now.", "no fenced"),
        ("The answer is TASK_COMPLETE.", "no fenced"),  # not alone on its line
        ("```bash\nls -la\n", "not closed"),
        (fenced("print('hi')", "python"), "not bash"),
        (fenced("ls") + "\n" + fenced("pwd"), "2 code blocks"),
        (fenced("# only a comment\n\n"), "no command"),
        ("", "no fenced"),
    ],
)
def test_unparseable_replies_are_parse_errors_with_a_reason(reply: str, reason: str) -> None:
    action = parse_action(reply)
    assert action.kind == "parse_error"
    assert reason in (action.error or "")
    assert action.error in format_parse_error(action)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_the_parser_never_raises_on_arbitrary_text(text: str) -> None:
    action = parse_action(text)
    assert action.kind in {"command", "done", "parse_error"}
    if action.kind == "command":
        assert action.command and "\n" not in action.command and action.command == action.command.strip()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="`\n"), min_size=1))
def test_a_fenced_single_line_command_round_trips(line: str) -> None:
    stripped = line.strip()
    action = parse_action(fenced(line))
    command = stripped[1:].lstrip() if stripped[:1] == "$" and stripped[1:2].isspace() else stripped
    if not command or stripped.startswith("#"):
        assert action.kind == "parse_error"
    elif stripped == "TASK_COMPLETE" or is_done_echo(command):
        assert action.kind == "done"
    else:
        assert action == Action(kind="command", command=command)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_a_done_line_wins_whatever_surrounds_it(before: str, after: str) -> None:
    assert parse_action(f"{before}\nTASK_COMPLETE\n{after}").kind == "done"


def test_observation_has_the_exit_code_and_both_streams() -> None:
    text = format_observation(ExecResult(exit_code=2, stdout="a\n", stderr="ls: cannot access 'x'\n"))
    assert text == "OBSERVATION (exit 2)\na\nls: cannot access 'x'\n"
    assert format_observation(ExecResult(exit_code=0)) == "OBSERVATION (exit 0)\n(no output)"


def test_observation_marks_timeouts_sandbox_errors_and_truncates() -> None:
    timed_out = format_observation(ExecResult(exit_code=124, timed_out=True, stdout="partial"))
    assert timed_out.startswith("OBSERVATION (exit 124, TIMED OUT)\npartial")
    flood = format_observation(ExecResult(exit_code=0, stdout="y\n" * 5000))
    body = flood.split("\n", 1)[1]
    assert body.startswith("y\ny\n") and body.endswith("[truncated: 6000 more characters]")
    assert len(body) <= OBSERVATION_LIMIT + 64
    failed = format_observation(ExecResult(exit_code=-1, error="sandbox died"))
    assert failed == "OBSERVATION (sandbox error)\nsandbox died"


def test_system_prompt_states_the_protocol() -> None:
    for rule in ("one fenced bash block", "TASK_COMPLETE", "relative paths", "No network"):
        assert rule in SYSTEM_PROMPT


def test_cli_parse_action_reads_stdin() -> None:
    from fieldkit.cli import app

    result = CliRunner().invoke(app, ["gym", "parse-action"], input="Sure.\n```bash\nmkdir -p out\n```\n")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"kind": "command", "command": "mkdir -p out", "error": None}
    done = CliRunner().invoke(app, ["gym", "parse-action"], input="TASK_COMPLETE")
    assert json.loads(done.stdout)["kind"] == "done"
