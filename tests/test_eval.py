"""Evaluation on hand-made episodes with known answers: metrics, deltas, bootstrap intervals, pass@k, the report."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fieldkit.eval import (
    Comparison,
    EvalInputError,
    compare,
    load_episodes,
    pass_at_k,
    render_markdown,
    sign_test,
    task_floors,
    write_report,
)
from fieldkit.gym.records import Action, AssertionResult, Episode, GradeResult, Turn
from fieldkit.lineage import Trial

PERSONAS = {"t1": "backend-developer", "t2": "backend-developer", "t3": "technical-writer", "t4": "technical-writer"}
FE, FCC = "file_exists", "file_contents_contain"
# What the untouched seed passes of each hand-made task: t1's file already exists, one of t4's contents already holds.
FLOORS = {"t1": {FE: 1}, "t2": {FE: 0}, "t3": {}, "t4": {FCC: 1}}


def episode(
    policy: str, task_id: str, checks: list[tuple[str, bool]], complete: bool, turns: int, wall_s: float, n: int = 0
) -> Episode:
    """A graded episode: `checks` are (assertion kind, passed); the task passes when all of them pass."""
    n_passed = sum(ok for _, ok in checks)
    return Episode(
        episode_id=f"{policy}-{task_id}-{n}",
        task_id=task_id,
        group_id=f"{task_id}-g",
        policy_version=-1 if policy == "base" else 3,
        turns=[
            Turn(
                index=i,
                prompt_token_ids=[1, 2],
                response_token_ids=[3],
                response_logprobs=[-0.5],
                response_text="```bash\nls\n```",
                action=Action(kind="command", command="ls"),
            )
            for i in range(turns)
        ],
        stop_reason="task_complete" if complete else "max_turns",
        grade=GradeResult(
            passed=n_passed == len(checks),
            n_passed=n_passed,
            n_total=len(checks),
            assertions=[AssertionResult(kind=kind, path="a.txt", passed=ok) for kind, ok in checks],
            score=n_passed / len(checks),
        ),
        wall_s=wall_s,
    )


def hand_made_policies() -> dict[str, list[Episode]]:
    """base passes 1/4 tasks, 3/7 assertions, completes 3/4, 5.25 turns, 25 s; rl passes 3/4, 6/7, 4/4, 3.5, 10 s."""
    base = [
        episode("base", "t1", [(FE, True), (FCC, False)], True, 2, 10.0),
        episode("base", "t2", [(FE, True)], True, 3, 20.0),
        episode("base", "t3", [(FE, False), (FCC, False)], False, 12, 30.0),
        episode("base", "t4", [(FCC, True), (FCC, False)], True, 4, 40.0),
    ]
    rl = [
        episode("rl", "t1", [(FE, True), (FCC, True)], True, 3, 5.0),
        episode("rl", "t2", [(FE, True)], True, 2, 5.0),
        episode("rl", "t3", [(FE, False), (FCC, True)], True, 5, 10.0),
        episode("rl", "t4", [(FCC, True), (FCC, True)], True, 4, 20.0),
    ]
    return {"base": base, "rl": rl}


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return compare(hand_made_policies(), PERSONAS, bootstrap_samples=500, seed=0)


def test_headline_values_and_deltas(comparison: Comparison) -> None:
    headline = comparison.slice("all")
    base, rl = headline.values["base"], headline.values["rl"]
    assert (base.episodes_passed, base.n_episodes, base.task_pass) == (1, 4, 0.25)
    assert (base.assertions_passed, base.assertions_total) == (3, 7)
    assert base.per_assertion == pytest.approx(3 / 7)
    assert (base.task_complete, base.mean_turns, base.mean_wall_s) == (0.75, 5.25, 25.0)
    assert (rl.task_pass, rl.per_assertion, rl.task_complete, rl.mean_turns, rl.mean_wall_s) == pytest.approx(
        (0.75, 6 / 7, 1.0, 3.5, 10.0)
    )
    deltas = headline.deltas["rl"]
    assert deltas["task_pass"].value == pytest.approx(50.0) and deltas["task_pass"].unit == "pp"
    assert deltas["per_assertion"].value == pytest.approx(300 / 7)
    assert deltas["task_complete"].value == pytest.approx(25.0)
    assert (deltas["mean_turns"].value, deltas["mean_turns"].unit) == (pytest.approx(-1.75), "turns")
    assert (deltas["mean_wall_s"].value, deltas["mean_wall_s"].unit) == (pytest.approx(-15.0), "s")
    assert "base" not in headline.deltas


def test_persona_and_kind_slices(comparison: Comparison) -> None:
    assert [(s.group, s.name) for s in comparison.slices] == [
        ("all", "all"),
        ("persona", "backend-developer"),
        ("persona", "technical-writer"),
        ("kind", FCC),
        ("kind", FE),
    ]
    backend = comparison.slice("persona", "backend-developer")
    assert backend.values["base"].n_tasks == 2
    assert backend.deltas["rl"]["task_pass"].value == pytest.approx(50.0)
    assert backend.deltas["rl"]["per_assertion"].value == pytest.approx(100 / 3)
    writer = comparison.slice("persona", "technical-writer")
    assert writer.deltas["rl"]["per_assertion"].value == pytest.approx(50.0)
    contains = comparison.slice("kind", FCC)  # tasks t1, t3, t4; only file_contents_contain assertions count
    assert (contains.values["base"].assertions_passed, contains.values["base"].assertions_total) == (1, 4)
    assert contains.values["rl"].per_assertion == 1.0
    assert contains.deltas["rl"]["per_assertion"].value == pytest.approx(75.0)
    exists = comparison.slice("kind", FE)  # t1, t2, t3: identical file_exists results under both policies
    assert exists.values["base"].n_tasks == 3
    assert (exists.deltas["rl"]["per_assertion"].low, exists.deltas["rl"]["per_assertion"].high) == (0.0, 0.0)
    assert exists.deltas["rl"]["task_pass"].value == pytest.approx(100 / 3)


def test_bootstrap_interval_matches_a_plain_reimplementation() -> None:
    """Thirty tasks at random; the headline interval is recomputed here with loops over the same task resamples."""
    rng = np.random.default_rng(7)
    personas = {f"t{i:02d}": ("a", "b", "c")[i % 3] for i in range(30)}
    policies: dict[str, list[Episode]] = {"base": [], "new": []}
    for policy, p in (("base", 0.3), ("new", 0.6)):
        for task in personas:
            checks = [(FE, bool(rng.random() < p)) for _ in range(int(rng.integers(1, 5)))]
            policies[policy].append(episode(policy, task, checks, bool(rng.random() < 0.8), 4, 10.0))
    samples, seed = 400, 11
    result = compare(policies, personas, bootstrap_samples=samples, seed=seed)

    tasks = sorted(personas)
    by_task = {p: {e.task_id: e for e in eps} for p, eps in policies.items()}
    resamples = np.random.default_rng(seed).integers(0, len(tasks), size=(samples, len(tasks)))  # the first slice
    task_pass_deltas, assertion_deltas = [], []
    for draw in resamples:
        chosen = [tasks[i] for i in draw]
        rates = {}
        for p in policies:
            grades = [by_task[p][t].grade for t in chosen]
            rates[p] = (
                sum(g.passed for g in grades) / len(grades),
                sum(g.n_passed for g in grades) / sum(g.n_total for g in grades),
            )
        task_pass_deltas.append(100 * (rates["new"][0] - rates["base"][0]))
        assertion_deltas.append(100 * (rates["new"][1] - rates["base"][1]))
    deltas = result.slice("all").deltas["new"]
    assert (deltas["task_pass"].low, deltas["task_pass"].high) == pytest.approx(
        (np.percentile(task_pass_deltas, 2.5), np.percentile(task_pass_deltas, 97.5))
    )
    assert (deltas["per_assertion"].low, deltas["per_assertion"].high) == pytest.approx(
        (np.percentile(assertion_deltas, 2.5), np.percentile(assertion_deltas, 97.5))
    )
    assert deltas["task_pass"].low <= deltas["task_pass"].value <= deltas["task_pass"].high


def test_per_assertion_net_of_the_floor_on_hand_made_tasks() -> None:
    result = compare(hand_made_policies(), PERSONAS, floors=FLOORS, bootstrap_samples=200)
    headline = result.slice("all")
    base, rl = headline.values["base"], headline.values["rl"]
    assert (base.assertions_floor, base.per_assertion_net) == (2, pytest.approx(1 / 5))  # (3 - 2) / (7 - 2)
    assert rl.per_assertion_net == pytest.approx(4 / 5)  # (6 - 2) / (7 - 2)
    assert headline.deltas["rl"]["per_assertion_net"].value == pytest.approx(60.0)
    exists, contains = result.slice("kind", FE), result.slice("kind", FCC)
    assert (exists.values["base"].per_assertion_net, exists.values["rl"].per_assertion_net) == (0.5, 0.5)
    assert (contains.values["base"].per_assertion_net, contains.values["rl"].per_assertion_net) == (0.0, 1.0)
    assert "| per-assertion net of floor | 1/5 (20.0%) | 4/5 (80.0%) | +60.0 pp [" in render_markdown(result)
    without = compare(hand_made_policies(), PERSONAS, bootstrap_samples=10).slice("all")
    assert without.values["base"].per_assertion_net is None and without.deltas["rl"]["per_assertion_net"].value is None
    with pytest.raises(EvalInputError, match=r"no floor \(seed workspace grade\) for tasks: t4"):
        compare(hand_made_policies(), PERSONAS, floors={t: f for t, f in FLOORS.items() if t != "t4"})


def test_floor_is_the_untouched_seed_of_real_tasks() -> None:
    """On generated ClawGym tasks: an agent that does nothing scores its floor, net 0; one that passes all, net 1."""
    from fieldkit.gym.generator import generate_tasks
    from fieldkit.gym.grader import floor_grade

    tasks = generate_tasks(1, 0)
    floors = task_floors(tasks)
    untouched = {t.task_id: [(r.kind, r.passed) for r in floor_grade(t).assertions] for t in tasks}
    idle = [episode("idle", t.task_id, untouched[t.task_id], False, 1, 1) for t in tasks]
    solved = [episode("all", t.task_id, [(a.kind, True) for a in t.verifiable_assertions], True, 1, 1) for t in tasks]
    personas = {t.task_id: t.persona.role for t in tasks}
    values = compare({"idle": idle, "all": solved}, personas, floors=floors, bootstrap_samples=10).slice("all").values
    idle = values["idle"]
    assert 0 < idle.assertions_floor < idle.assertions_total  # some assertions pass untouched, never all
    assert idle.per_assertion == pytest.approx(idle.assertions_floor / idle.assertions_total)
    assert (idle.per_assertion_net, values["all"].per_assertion_net) == (0.0, 1.0)


def test_sign_test_is_exact_mcnemar_on_hand_made_pairs() -> None:
    # 10 wins, 1 loss, 5 ties: ties drop out; p = 2 * P(X <= 1), X ~ Binomial(11, 1/2) = 2 * 12 / 2048.
    assert sign_test([1.0] * 10 + [-0.5] + [0.0] * 5) == pytest.approx(24 / 2048)
    assert sign_test([-1.0] * 10 + [0.5]) == sign_test([1.0] * 10 + [-0.5])
    assert sign_test([1.0, -1.0]) == 1.0 and sign_test([0.0, float("nan")]) is None
    # Hand-made policies: rl wins t1 and t4 on task pass, loses none -> exact McNemar p = 2 * (1/2)^2.
    result = compare(hand_made_policies(), PERSONAS, bootstrap_samples=10)
    deltas = result.slice("all").deltas["rl"]
    assert deltas["task_pass"].p_value == pytest.approx(0.5)
    assert deltas["mean_turns"].p_value == pytest.approx(1.0)  # t2 and t3 fewer turns, t1 more, t4 the same
    assert "+50.0 pp [" in render_markdown(result) and " p=0.5 |" in render_markdown(result)


def test_deltas_against_a_named_baseline() -> None:
    policies = hand_made_policies()
    three = {"base": policies["base"], "sft": policies["base"], "rl": policies["rl"]}
    sft_ep = [e.model_copy(update={"episode_id": e.episode_id.replace("base", "sft")}) for e in three["sft"]]
    result = compare({**three, "sft": sft_ep}, PERSONAS, baseline="sft", bootstrap_samples=50)
    headline = result.slice("all")
    assert (result.baseline, sorted(headline.deltas)) == ("sft", ["base", "rl"])
    assert headline.deltas["rl"]["task_pass"].value == pytest.approx(50.0)
    assert headline.deltas["base"]["task_pass"].value == 0.0 and headline.deltas["base"]["task_pass"].p_value is None
    assert "| metric | base | sft | rl | Δ base | Δ rl |" in render_markdown(result)
    with pytest.raises(EvalInputError, match="baseline 'best' is not one of the policies"):
        compare(policies, PERSONAS, baseline="best")


@pytest.mark.parametrize(("n", "c", "k"), [(5, 2, 1), (5, 2, 2), (5, 2, 4), (6, 0, 3), (4, 4, 2), (10, 3, 5)])
def test_pass_at_k_equals_enumerating_every_k_subset(n: int, c: int, k: int) -> None:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert len(subsets) == math.comb(n, k)


def test_pass_at_k_over_tasks_with_several_episodes() -> None:
    # t1: 2 of 4 pass, t2: 0 of 4, t3 and t4: 4 of 4 -> pass@1 = (0.5+0+1+1)/4, pass@2 = (1-1/6+0+1+1)/4.
    passes = {"t1": 2, "t2": 0, "t3": 4, "t4": 4}
    episodes = [
        episode("base", task, [(FE, i < passes[task])], True, 3, 1.0, n=i) for task in PERSONAS for i in range(4)
    ]
    result = compare({"base": episodes}, PERSONAS)
    assert result.pass_at_k["base"] == pytest.approx({1: 2.5 / 4, 2: (1 - 1 / 6 + 2) / 4, 4: 3 / 4})
    assert result.slice("all").values["base"].task_pass == pytest.approx(2.5 / 4)
    assert result.slice("all").deltas == {}  # one policy: values only
    with pytest.raises(EvalInputError, match="pass@8 needs at least 8 episodes per task; fewer in t1, t2, t3, t4"):
        compare({"base": episodes}, PERSONAS, ks=[8])


def test_mismatched_and_bad_inputs_name_the_ids() -> None:
    policies = hand_made_policies()
    policies["rl"] = [e for e in policies["rl"] if e.task_id != "t3"] + [
        episode("rl", "t9", [(FE, True)], True, 1, 1.0)
    ]
    with pytest.raises(EvalInputError, match=r"'rl' lacks tasks that 'base' ran: t3(.|\n)*'rl' ran tasks .*: t9"):
        compare(policies, {**PERSONAS, "t9": "devops-engineer"})
    with pytest.raises(EvalInputError, match="tasks with no persona in the task file: t9"):
        compare(policies, PERSONAS)
    ungraded = hand_made_policies()
    ungraded["base"][1] = ungraded["base"][1].model_copy(update={"grade": None})
    with pytest.raises(EvalInputError, match=r"episodes without a grade .* in tasks t2; episodes base-t2-0"):
        compare(ungraded, PERSONAS)
    doubled = hand_made_policies()
    doubled["rl"].append(doubled["rl"][0])
    with pytest.raises(EvalInputError, match="episode ids appear more than once: rl-t1-0"):
        compare(doubled, PERSONAS)


def test_episode_files_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "episodes.jsonl"
    good = hand_made_policies()["base"][0].model_dump_json()
    bad = json.loads(good)
    del bad["stop_reason"]
    path.write_text(good + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(EvalInputError, match=r"episodes.jsonl:3: not an Episode record: stop_reason: Field required"):
        load_episodes(path)
    with pytest.raises(EvalInputError, match="no such episode file"):
        load_episodes(tmp_path / "missing.jsonl")


def write_policies(directory: Path) -> dict[str, Path]:
    paths = {}
    for policy, episodes in hand_made_policies().items():
        paths[policy] = directory / f"{policy}.jsonl"
        paths[policy].write_text("".join(e.model_dump_json() + "\n" for e in episodes))
    return paths


def curve_trials() -> list[Trial]:
    trials = [
        Trial(run_id="rl", kind="validation-gate", status="baseline", step=0, metric=0.25, metric_name="validation")
    ]
    for step in range(1, 5):
        trials.append(
            Trial(run_id="rl", kind="rl-step", status="keep", step=step, metric=0.4 + step / 10, metric_name="train")
        )
    trials += [Trial(run_id="rl", kind="validation-gate", status="keep", step=4, metric=0.75, metric_name="validation")]
    return [t.model_copy(update={"trial_id": f"rl/{i}", "seq": i + 1}) for i, t in enumerate(trials)]


def test_report_files_appear_open_and_rebuild_identically(tmp_path: Path) -> None:
    paths = write_policies(tmp_path)
    loaded = {policy: load_episodes(path) for policy, path in paths.items()}
    result = compare(loaded, PERSONAS, bootstrap_samples=300, seed=3)
    written = write_report(result, tmp_path / "report", curve_trials())
    names = sorted(p.name for p in written)
    assert names == ["per_kind.png", "per_persona.png", "report.json", "report.md", "training_curves.png"]
    import matplotlib.image

    for png in (p for p in written if p.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| metric | base | rl | Δ rl |" in markdown
    assert "| task pass | 1/4 (25.0%) | 3/4 (75.0%) | +50.0 pp [" in markdown
    assert "| mean turns | 5.25 | 3.50 | -1.75 [" in markdown
    assert "| file_contents_contain | 3 | 1/4 (25.0%) | 4/4 (100.0%) | +75.0 pp [" in markdown
    assert "![Training curves from the lineage store](training_curves.png)" in markdown
    assert Comparison.model_validate_json((tmp_path / "report" / "report.json").read_text()) == result

    # Rebuilt from the files on disk alone: the same text.
    again = compare({p: load_episodes(path) for p, path in paths.items()}, PERSONAS, bootstrap_samples=300, seed=3)
    write_report(again, tmp_path / "again", curve_trials())
    assert (tmp_path / "again" / "report.md").read_text() == markdown


def test_importing_eval_and_lineage_loads_no_numpy_or_matplotlib() -> None:
    import subprocess
    import sys

    code = "import fieldkit.eval, fieldkit.lineage, sys; print(sorted({'numpy', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_trial_metrics_feed_a_validation_gate(tmp_path: Path) -> None:
    from fieldkit.eval import trial_metrics
    from fieldkit.lineage import LineageStore

    gate = trial_metrics(hand_made_policies()["rl"], floors=FLOORS)
    assert gate == pytest.approx(
        {
            "validation.task_pass": 0.75,
            "validation.per_assertion": 6 / 7,
            "validation.per_assertion_net": 4 / 5,
            "validation.task_complete": 1.0,
            "validation.mean_turns": 3.5,
            "validation.mean_wall_s": 10.0,
            "validation.n_tasks": 4.0,
            "validation.n_episodes": 4.0,
        }
    )
    assert trial_metrics(hand_made_policies()["rl"])["validation.per_assertion_net"] is None  # no floor given
    store = LineageStore(tmp_path / "lineage.db")
    stored = store.record_trial(
        Trial(
            run_id="rl",
            kind="validation-gate",
            status="keep",
            step=4,
            metric_name="validation.task_pass",
            metric=gate["validation.task_pass"],
            metrics=gate,
        )
    )
    assert store.best("rl", metric="validation.per_assertion") == stored
