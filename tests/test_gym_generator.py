"""The corpus generator: deterministic bytes, the task mix, every oracle passing in a real sandbox, the frozen split."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import require_sandbox_backend
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.gym.corpus import (
    SPLIT_FILE,
    TASKS_FILE,
    TwoWaySplitError,
    load_corpus,
    make_split,
    split_bytes,
    stratified_subset,
    task_lines,
    write_corpus,
)
from fieldkit.gym.generator import generate_tasks
from fieldkit.gym.grader import grade
from fieldkit.gym.oracle import check_task, check_tasks
from fieldkit.gym.personas import personas
from fieldkit.gym.task import DIFFICULTY_STEPS, FileExists
from fieldkit.gym.workspace import seed_snapshot


@pytest.fixture(scope="module")
def corpus():
    return generate_tasks(25, 0)


@pytest.fixture(scope="module")
def local_runner():
    from sandbox.runner import oracle_runner

    return oracle_runner("local")


def test_same_seed_same_bytes_other_seed_other_tasks(corpus) -> None:
    assert task_lines(generate_tasks(25, 0)) == task_lines(corpus)
    other = generate_tasks(25, 1)
    assert task_lines(other) != task_lines(corpus)
    assert [t.task_id for t in other] == [t.task_id for t in corpus]


def test_two_hundred_tasks_with_the_reference_shape(corpus) -> None:
    assert len(corpus) == 200
    assert len({t.task_id for t in corpus}) == 200
    assert Counter(t.persona.role for t in corpus) == {p.role: 25 for p in personas()}
    difficulty = Counter(t.difficulty for t in corpus)
    assert set(difficulty) == {"easy", "medium", "hard"}
    assert difficulty["easy"] >= 100  # most tasks stay learnable by a small model
    assert sum(len(t.reference_solution) <= 2 for t in corpus) >= 100
    for task in corpus:
        assert 2 <= len(task.verifiable_assertions) <= 6, task.task_id
        assert task.estimated_steps == len(task.reference_solution)
        low, high = DIFFICULTY_STEPS[task.difficulty]
        assert low <= task.estimated_steps <= (high or 99)
    for role in {t.persona.role for t in corpus}:
        intents = [t.intent for t in corpus if t.persona.role == role]
        assert len(set(intents)) == len(intents), role


def test_the_do_nothing_agent_fails_every_task(corpus) -> None:
    for task in corpus:
        assert not grade(task, seed_snapshot(task.workspace_seed)).passed, task.task_id


def test_other_seeds_generate_without_template_errors() -> None:
    for seed in range(1, 4):
        assert len(generate_tasks(25, seed)) == 200


def test_all_200_oracles_pass_in_a_local_sandbox(corpus, local_runner) -> None:
    verdicts = list(check_tasks(corpus, local_runner, workers=2))
    failed = {v.task_id: v.problems for v in verdicts if not v.ok}
    assert failed == {}
    assert all(v.grade is not None and v.grade.passed for v in verdicts)


def test_a_wrong_oracle_or_a_vacuous_task_is_reported(corpus, local_runner) -> None:
    task = corpus[0]  # rename a level file
    wrong = task.model_copy(update={"reference_solution": ["ls", "cat no-such-file"]})
    verdict = check_task(wrong, local_runner)
    assert not verdict.ok
    assert any("exited 1" in p for p in verdict.problems)
    assert any(p.startswith("assertion file_exists") for p in verdict.problems)
    vacuous = task.model_copy(update={"verifiable_assertions": [FileExists(path=task.workspace_seed.files[0].path)]})
    assert "the untouched seed already passes every assertion" in check_task(vacuous, local_runner).problems


def test_split_is_three_way_disjoint_stratified_seeded_and_frozen_on_disk(tmp_path, corpus) -> None:
    split = make_split(corpus, 42, 40, 0)
    assert (len(split.train), len(split.validation), len(split.test)) == (42, 40, 118)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert set().union(*parts) == {t.task_id for t in corpus} and sum(map(len, parts)) == 200  # disjoint, covering
    role = {t.task_id: t.persona.role for t in corpus}
    for ids, sizes in ((split.train, {5, 6}), (split.validation, {5}), (split.test, {14, 15})):
        per_persona = Counter(role[i] for i in ids)
        assert len(per_persona) == 8 and set(per_persona.values()) <= sizes
    assert make_split(corpus, 42, 40, 0) == split and make_split(corpus, 42, 40, 1) != split
    with pytest.raises(ValueError, match=r"n_validation 159 must be within 0\.\.158"):
        make_split(corpus, 42, 159, 0)

    write_corpus(tmp_path, corpus, 42, 40, 0)
    frozen = json.loads((tmp_path / SPLIT_FILE).read_text())
    frozen["train"], frozen["test"] = frozen["test"][:10], frozen["test"][10:] + frozen["train"]
    (tmp_path / SPLIT_FILE).write_text(json.dumps(frozen))
    reused = write_corpus(tmp_path, corpus, 42, 40, 7)  # another seed asked for: the split on disk wins
    assert reused.train == frozen["train"]
    tasks, loaded = load_corpus(tmp_path)
    assert loaded == reused and len(tasks) == 200

    with pytest.raises(ValueError, match="not in the split"):
        write_corpus(tmp_path, generate_tasks(26, 0), 42, 40, 0)
    assert (tmp_path / TASKS_FILE).read_bytes() == task_lines(corpus)  # nothing overwritten on error
    frozen["validation"] = frozen["validation"] + frozen["test"][:1]
    (tmp_path / SPLIT_FILE).write_text(json.dumps(frozen))
    with pytest.raises(ValueError, match="task ids in both validation and test"):
        load_corpus(tmp_path)


def test_subsets_are_fixed_and_stratified(corpus) -> None:
    split = make_split(corpus, 42, 40, 0)
    role = {t.task_id: t.persona.role for t in corpus}
    subset = stratified_subset(split.test, role, 48, "test")
    assert len(subset) == 48 and set(subset) <= set(split.test)
    assert set(Counter(role[i] for i in subset).values()) == {6}
    assert subset == [i for i in split.test if i in set(subset)]  # in split order
    assert stratified_subset(split.test, role, 48, "test") == subset  # the same for every run seed
    assert stratified_subset(split.test, role, 48, "validation") != subset
    assert stratified_subset(split.test, role, None, "test") == stratified_subset(split.test, role, 500, "test")


def test_a_two_way_split_is_refused_and_migrates_to_the_new_split(tmp_path, corpus) -> None:
    """What the old make_split drew (train 42, heldout 158) migrates to what a new build draws, train untouched."""
    new = make_split(corpus, 42, 40, 0)
    two_way = {"seed": 0, "train": new.train, "heldout": new.validation + new.test, "note": "old"}
    write_corpus(tmp_path, corpus, 42, 40, 0)
    (tmp_path / SPLIT_FILE).write_text(json.dumps(two_way))
    with pytest.raises(TwoWaySplitError, match="fieldkit gym migrate-split --corpus"):
        load_corpus(tmp_path)
    with pytest.raises(TwoWaySplitError):
        write_corpus(tmp_path, corpus, 42, 40, 0)

    result = CliRunner().invoke(app, ["gym", "migrate-split", "--corpus", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "42 train (kept) / 40 validation / 118 test" in result.stdout
    _, migrated = load_corpus(tmp_path)
    assert migrated == new and (tmp_path / SPLIT_FILE).read_bytes() == split_bytes(new)
    again = CliRunner().invoke(app, ["gym", "migrate-split", "--corpus", str(tmp_path)])
    assert again.exit_code == 1 and "not a two-way train/heldout split" in again.stderr


def test_cli_build_is_byte_identical_and_reports_the_corpus(tmp_path) -> None:
    outputs = []
    for name in ("a", "b"):
        result = CliRunner().invoke(
            app, ["gym", "build", "--out", str(tmp_path / name), "--backend", "local", "--workers", "2", "--json"]
        )
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert outputs[0] == {**outputs[1], "out": outputs[0]["out"]}
    assert [outputs[0][key] for key in ("tasks", "train", "validation", "test", "oracles_passed")] == [
        200,
        42,
        40,
        118,
        200,
    ]
    for name in (TASKS_FILE, SPLIT_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.sandbox
def test_oracles_pass_in_an_isolating_sandbox(corpus) -> None:
    from sandbox.probe import backend_problem
    from sandbox.runner import oracle_runner

    backend = "docker" if backend_problem("docker") is None else require_sandbox_backend("bwrap")
    sample = [t for t in corpus if int(t.task_id[-3:]) in (0, 5, 9)]  # an easy, a medium and a hard per persona
    verdicts = list(check_tasks(sample, oracle_runner(backend), workers=4))
    assert {v.task_id: v.problems for v in verdicts if not v.ok} == {}
    assert len(verdicts) == 24
