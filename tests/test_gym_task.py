"""The task schema and `fieldkit gym validate`: line-numbered errors for every kind of bad task."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fieldkit.gym.task import Task
from fieldkit.gym.validate import CorpusError, load_tasks, validate_file

GOOD = {
    "task_id": "indie-game-dev-900",
    "persona": {"role": "indie-game-dev", "context": "a platformer"},
    "intent": "Rename `levels/l1.json` to `levels/level_01.json`.",
    "workspace_seed": {
        "files": [
            {"path": "levels/l1.json", "kind": "text", "content": '{"name": "Forest"}\n'},
            {"path": "sprites/hero.png", "kind": "binary-stub", "size": 2048},
        ]
    },
    "skills_required": ["file.move"],
    "verifiable_assertions": [
        {"kind": "file_exists", "path": "levels/level_01.json"},
        {"kind": "file_not_exists", "path": "levels/l1.json"},
        {"kind": "file_contents_match_regex", "path": "levels/level_01.json", "regex": r'"name":\s*"Forest"'},
    ],
    "difficulty": "easy",
    "estimated_steps": 1,
    "reference_solution": ["mv levels/l1.json levels/level_01.json"],
}


def variant(**changes) -> dict:
    task = json.loads(json.dumps(GOOD))
    task.update(changes)
    return task


def test_a_published_style_task_round_trips() -> None:
    task = Task.model_validate(GOOD)
    assert Task.model_validate_json(task.model_dump_json(exclude_none=True)) == task
    assert task.seed_files()["sprites/hero.png"] == bytes(2048)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"difficulty": "hard"}, r"difficulty hard needs 8\+ estimated_steps"),
        ({"skills_required": ["file.teleport"]}, "unknown skills"),
        ({"verifiable_assertions": []}, "at least 1 item"),
        ({"reference_solution": ["ls\nrm -rf /"]}, "one non-empty line"),
        ({"task_id": "has space"}, "should match pattern"),
        (
            {"workspace_seed": {"files": [{"path": "a", "content": "x"}, {"path": "a/b", "content": "y"}]}},
            "also the directory of",
        ),
        ({"workspace_seed": {"files": [{"path": "a", "content": "x"}, {"path": "./a", "content": "y"}]}}, "twice"),
        ({"workspace_seed": {"files": [{"path": "x.png", "kind": "binary-stub"}]}}, "needs a size"),
    ],
)
def test_invalid_tasks_are_refused_with_the_reason(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Task.model_validate(variant(**changes))


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_validate_reports_every_problem_with_its_line(tmp_path) -> None:
    bad_kind = variant(task_id="b1", verifiable_assertions=[{"kind": "file_is_there", "path": "x"}])
    bad_regex = variant(
        task_id="b2", verifiable_assertions=[{"kind": "file_contents_match_regex", "path": "x", "regex": "(["}]
    )
    escaping = variant(task_id="b3", verifiable_assertions=[{"kind": "file_exists", "path": "../../etc/passwd"}])
    absolute = variant(task_id="b4", workspace_seed={"files": [{"path": "/etc/x", "content": "y"}]})
    path = write_jsonl(
        tmp_path / "tasks.jsonl",
        [
            json.dumps(GOOD),
            "{not json",
            json.dumps(bad_kind),
            json.dumps(bad_regex),
            json.dumps(escaping),
            "",
            json.dumps(absolute),
            json.dumps(GOOD),
            "[1, 2]",
        ],
    )
    tasks, problems = validate_file(path)
    assert [t.task_id for t in tasks] == ["indie-game-dev-900"]
    found = {(p.line, p.message.split(":")[0]) for p in problems}
    assert {line for line, _ in found} == {2, 3, 4, 5, 7, 8, 9}
    text = "\n".join(str(p) for p in problems)
    assert "line 2: malformed JSON" in text
    assert "line 3: verifiable_assertions.0: unknown assertion kind 'file_is_there'" in text
    assert "line 4: verifiable_assertions.0.file_contents_match_regex.regex: invalid regex '(['" in text
    assert "line 5: verifiable_assertions.0.file_exists.path: path '../../etc/passwd' must be relative" in text
    assert "line 7: workspace_seed.files.0.path: path '/etc/x' must be relative" in text
    assert "line 8: duplicate task_id 'indie-game-dev-900' (first on line 1)" in text
    assert "line 9: expected a JSON object, got list" in text
    with pytest.raises(CorpusError, match="7 problem"):
        load_tasks(path)


def test_cli_validate_exits_1_on_any_error_and_0_on_a_clean_file(tmp_path) -> None:
    from fieldkit.cli import app

    good = write_jsonl(tmp_path / "good.jsonl", [json.dumps(GOOD), json.dumps(variant(task_id="other"))])
    ok = CliRunner().invoke(app, ["gym", "validate", str(good)])
    assert ok.exit_code == 0 and "2 valid tasks" in " ".join(ok.output.split())
    bad = write_jsonl(tmp_path / "bad.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    failed = CliRunner().invoke(app, ["gym", "validate", str(bad)])
    assert failed.exit_code == 1
    assert f"{bad}:2: duplicate task_id" in failed.output
    missing = CliRunner().invoke(app, ["gym", "validate", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "cannot read" in " ".join(missing.output.split())


def test_line_separators_inside_json_strings_do_not_split_a_jsonl_line(tmp_path) -> None:
    odd = variant(intent="Rename the level\u2028(the one with a \x1c in its notes).")
    path = tmp_path / "tasks.jsonl"
    path.write_text(Task.model_validate(odd).model_dump_json() + "\n" + json.dumps(variant(task_id="second")) + "\n")
    tasks, problems = validate_file(path)
    assert problems == [] and [t.task_id for t in tasks] == ["indie-game-dev-900", "second"]
