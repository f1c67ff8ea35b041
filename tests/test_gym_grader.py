"""The assertion grader on both workspace forms (a directory and a snapshot of it), with the reference semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fieldkit.gym.grader import grade
from fieldkit.gym.records import SnapshotEntry, WorkspaceFile, WorkspaceSeed, WorkspaceSnapshot
from fieldkit.gym.task import Task
from fieldkit.gym.workspace import DirectoryView, SnapshotView, seed_snapshot

SEED = WorkspaceSeed(
    files=[
        WorkspaceFile(path="notes/todo.md", content="# TODO\n- ship it\n"),
        WorkspaceFile(path="sprites/hero.png", kind="binary-stub", size=64),
        WorkspaceFile(path="config.yaml", content="lr: 0.001\nepochs: 10\n"),
    ]
)


def make_task(*assertions: dict, rubric: list[dict] | None = None) -> Task:
    return Task.model_validate(
        {
            "task_id": "t-1",
            "persona": {"role": "ml-engineer", "context": "tests"},
            "intent": "do the thing",
            "workspace_seed": SEED.model_dump(),
            "verifiable_assertions": list(assertions),
            "difficulty": "easy",
            "estimated_steps": 1,
            "rubric": rubric or [],
        }
    )


def write_seed(root: Path, seed: WorkspaceSeed = SEED) -> Path:
    for f in seed.files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.content.encode() if f.kind == "text" else bytes(f.size or 0))
    return root


def snapshot_of(root: Path) -> WorkspaceSnapshot:
    """A snapshot taken the way a sandbox takes one: lstat every path, never follow a symlink."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                entries.append(SnapshotEntry(path=rel, kind="symlink", link_target=os.readlink(full)))
            elif full.is_dir():
                entries.append(SnapshotEntry(path=rel, kind="dir"))
            elif full.is_file():
                data = full.read_bytes()
                entries.append(SnapshotEntry(path=rel, kind="file", size=len(data), data=data))
    return WorkspaceSnapshot(entries=entries, cap_bytes=1 << 20)


@pytest.fixture(params=["directory", "snapshot"])
def as_workspace(request):
    """Grade the same tree as a directory and as its snapshot: the answers must agree."""

    def convert(root: Path):
        return root if request.param == "directory" else snapshot_of(root)

    return convert


def results(task: Task, workspace) -> list[tuple[bool, str]]:
    return [(a.passed, a.detail) for a in grade(task, workspace).assertions]


def test_file_exists_is_true_for_files_and_directories(tmp_path, as_workspace) -> None:
    write_seed(tmp_path)
    task = make_task(
        {"kind": "file_exists", "path": "notes/todo.md"},
        {"kind": "file_exists", "path": "notes"},
        {"kind": "file_exists", "path": "notes/"},
        {"kind": "file_exists", "path": "./sprites/hero.png"},
        {"kind": "file_exists", "path": "missing.txt"},
        {"kind": "file_not_exists", "path": "missing.txt"},
        {"kind": "file_not_exists", "path": "notes"},
    )
    passed = [p for p, _ in results(task, as_workspace(tmp_path))]
    assert passed == [True, True, True, True, False, True, False]


def test_contains_regex_and_unchanged(tmp_path, as_workspace) -> None:
    write_seed(tmp_path)
    (tmp_path / "config.yaml").write_text("lr: 0.0005\nepochs: 10\n")
    task = make_task(
        {"kind": "file_contents_contain", "path": "config.yaml", "must_contain": ["lr: 0.0005", "epochs: 10"]},
        {"kind": "file_contents_contain", "path": "config.yaml", "must_contain": ["lr: 0.001", "epochs: 10"]},
        {"kind": "file_contents_match_regex", "path": "config.yaml", "regex": r"^epochs: \d+$"},  # re.search, no flags
        {"kind": "file_contents_match_regex", "path": "config.yaml", "regex": r"(?m)^epochs: \d+$"},
        {"kind": "file_unchanged", "path": "notes/todo.md"},
        {"kind": "file_unchanged", "path": "config.yaml"},
        {"kind": "file_unchanged", "path": "not/in/seed.txt"},  # no seed to compare with: passes
    )
    outcome = results(task, as_workspace(tmp_path))
    assert [p for p, _ in outcome] == [True, False, False, True, True, False, True]
    assert "missing 1 of 2: 'lr: 0.001'" in outcome[1][1]
    graded = grade(task, as_workspace(tmp_path))
    assert (graded.passed, graded.n_passed, graded.n_total) == (False, 4, 7)
    assert graded.score == pytest.approx(4 / 7)


def test_empty_must_contain_needs_only_a_readable_text_file(tmp_path, as_workspace) -> None:
    write_seed(tmp_path)
    task = make_task(
        {"kind": "file_contents_contain", "path": "notes/todo.md", "must_contain": []},
        {"kind": "file_contents_contain", "path": "gone.md", "must_contain": []},
        {"kind": "file_contents_contain", "path": "notes", "must_contain": []},
    )
    outcome = results(task, as_workspace(tmp_path))
    assert [p for p, _ in outcome] == [True, False, False]
    assert outcome[1][1] == "missing"
    assert outcome[2][1] == "is a directory"


def test_binary_and_non_utf8_files_fail_content_assertions_with_a_reason(tmp_path, as_workspace) -> None:
    write_seed(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    task = make_task(
        {"kind": "file_contents_contain", "path": "sprites/hero.png", "must_contain": []},
        {"kind": "file_contents_match_regex", "path": "latin1.txt", "regex": "caf"},
        {"kind": "file_unchanged", "path": "sprites/hero.png"},  # the zero-filled stub is still what was seeded
    )
    outcome = results(task, as_workspace(tmp_path))
    assert outcome[0][0] is False and "binary file" in outcome[0][1]
    assert outcome[1][0] is False and "not UTF-8" in outcome[1][1]
    assert outcome[2] == (True, "equals the seed")
    (tmp_path / "sprites/hero.png").write_bytes(b"\x01" * 64)
    assert results(task, as_workspace(tmp_path))[2][0] is False


def test_symlinks_are_never_followed_out_of_the_workspace(tmp_path, as_workspace) -> None:
    root = write_seed(tmp_path / "ws")
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOKEN=hunter2\n")
    os.symlink(outside / "secret.txt", root / "leak.txt")
    os.symlink(outside, root / "hostdir")
    os.symlink("../host/secret.txt", root / "notes/relative.txt")
    task = make_task(
        {"kind": "file_contents_contain", "path": "leak.txt", "must_contain": ["TOKEN"]},
        {"kind": "file_contents_match_regex", "path": "notes/relative.txt", "regex": "TOKEN"},
        {"kind": "file_exists", "path": "hostdir/secret.txt"},
        {"kind": "file_contents_contain", "path": "hostdir/secret.txt", "must_contain": []},
        {"kind": "file_exists", "path": "leak.txt"},  # the link itself is an entry of the workspace
    )
    outcome = results(task, as_workspace(root))
    assert [p for p, _ in outcome] == [False, False, False, False, True]
    assert "symlink" in outcome[0][1] and "not followed" in outcome[0][1]
    assert outcome[2][1] == "hostdir is a symlink; not followed"
    assert "hunter2" not in str(outcome)


def test_paths_that_escape_the_workspace_are_not_assertions() -> None:
    for bad in ("../etc/passwd", "/etc/passwd", "notes/../../x", ""):
        with pytest.raises(ValueError, match="relative to the workspace"):
            make_task({"kind": "file_exists", "path": bad})
    with pytest.raises(ValueError, match="names the workspace itself"):
        make_task({"kind": "file_exists", "path": "./"})


def test_a_fifo_and_an_oversized_file_do_not_hang_or_exhaust_the_grader(tmp_path) -> None:
    write_seed(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big.log").write_bytes(b"x" * 5000)
    task = make_task(
        {"kind": "file_contents_contain", "path": "pipe", "must_contain": []},
        {"kind": "file_contents_contain", "path": "big.log", "must_contain": ["x"]},
        {"kind": "file_exists", "path": "pipe"},
    )
    outcome = [(a.passed, a.detail) for a in grade(task, DirectoryView(tmp_path, cap_bytes=1000)).assertions]
    assert outcome[0] == (False, "is not a regular file")
    assert outcome[1] == (False, "larger than the cap (1000 bytes)")
    assert outcome[2][0] is True


def test_a_capped_snapshot_entry_is_unreadable_not_misgraded() -> None:
    snap = WorkspaceSnapshot(
        entries=[SnapshotEntry(path="big.log", kind="file", size=5000, data=b"x" * 100, truncated=True)],
        cap_bytes=100,
    )
    task = make_task({"kind": "file_contents_contain", "path": "big.log", "must_contain": ["x"]})
    assert grade(task, snap).assertions[0].detail == "larger than the snapshot cap (100 bytes)"


def test_the_untouched_seed_snapshot_grades_like_the_seeded_directory(tmp_path) -> None:
    write_seed(tmp_path)
    task = make_task(
        {"kind": "file_unchanged", "path": "config.yaml"},
        {"kind": "file_exists", "path": "notes"},
        {"kind": "file_contents_contain", "path": "notes/todo.md", "must_contain": ["ship it"]},
        {"kind": "file_contents_contain", "path": "sprites/hero.png", "must_contain": []},
    )
    assert grade(task, seed_snapshot(SEED)) == grade(task, tmp_path)
    assert SnapshotView(seed_snapshot(SEED)).lookup("sprites").kind == "dir"


def test_rubric_mixes_seventy_thirty_only_when_judged() -> None:
    task = make_task(
        {"kind": "file_exists", "path": "notes/todo.md"},
        {"kind": "file_exists", "path": "missing"},
        rubric=[{"id": "tone", "description": "friendly"}, {"id": "format", "description": "markdown"}],
    )
    snap = seed_snapshot(SEED)
    assert grade(task, snap).score == pytest.approx(0.5)
    judged = grade(task, snap, {"tone": 1.0, "format": 0.5})
    assert judged.score == pytest.approx(0.7 * 0.5 + 0.3 * 0.75)
    assert judged.rubric_score == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one of"):
        grade(task, snap, {"tone": 0.3, "format": 0.5})
    with pytest.raises(ValueError, match="expected ids"):
        grade(task, snap, {"tone": 1.0})


def test_cli_grade_prints_the_grade_as_json(tmp_path) -> None:
    from fieldkit.cli import app

    write_seed(tmp_path / "ws")
    task = make_task(
        {"kind": "file_exists", "path": "notes/todo.md"}, {"kind": "file_not_exists", "path": "config.yaml"}
    )
    (tmp_path / "task.json").write_text(task.model_dump_json())
    result = CliRunner().invoke(
        app, ["gym", "grade", "--task", str(tmp_path / "task.json"), "--workspace", str(tmp_path / "ws")]
    )
    assert result.exit_code == 1, result.output
    import json

    data = json.loads(result.stdout)
    assert (data["passed"], data["n_passed"], data["n_total"]) == (False, 1, 2)
    assert data["assertions"][1] == {
        "kind": "file_not_exists",
        "path": "config.yaml",
        "passed": False,
        "detail": "file exists",
    }
    (tmp_path / "ws/config.yaml").unlink()
    passed = CliRunner().invoke(
        app, ["gym", "grade", "--task", str(tmp_path / "task.json"), "--workspace", str(tmp_path / "ws")]
    )
    assert passed.exit_code == 0 and json.loads(passed.stdout)["passed"] is True
