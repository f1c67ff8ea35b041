"""Evaluation cost at the reference's size (158 held-out tasks, 2 policies): the full matched comparison with 2,000
bootstrap resamples per slice against the same comparison with point estimates only (1 resample), and the report."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from fieldkit.eval import compare, write_report
from fieldkit.gym.records import Action, AssertionResult, Episode, GradeResult, Turn

PERSONAS = [
    "academic-author",
    "backend-developer",
    "data-science-researcher",
    "devops-engineer",
    "embedded-firmware-dev",
    "indie-game-dev",
    "ml-engineer",
    "technical-writer",
]
KINDS = ["file_exists", "file_not_exists", "file_contents_contain", "file_contents_match_regex", "file_unchanged"]
N_TASKS = 158


def episodes(policy: str, p_pass: float, rng: random.Random) -> list[Episode]:
    made = []
    for i in range(N_TASKS):
        checks = [(rng.choice(KINDS), rng.random() < p_pass) for _ in range(rng.randint(2, 6))]
        n_passed = sum(ok for _, ok in checks)
        turn = Turn(
            index=0,
            prompt_token_ids=[1],
            response_token_ids=[2],
            response_logprobs=[-0.1],
            response_text="TASK_COMPLETE",
            action=Action(kind="done"),
        )
        made.append(
            Episode(
                episode_id=f"{policy}-{i}",
                task_id=f"task-{i:03d}",
                group_id=f"g{i}",
                policy_version=0,
                turns=[turn] * rng.randint(1, 12),
                stop_reason="task_complete" if rng.random() < 0.9 else "max_turns",
                grade=GradeResult(
                    passed=n_passed == len(checks),
                    n_passed=n_passed,
                    n_total=len(checks),
                    assertions=[AssertionResult(kind=k, path="f", passed=ok) for k, ok in checks],
                    score=n_passed / len(checks),
                ),
                wall_s=rng.uniform(5, 30),
            )
        )
    return made


def main() -> dict[str, float]:
    rng = random.Random(0)
    policies = {"base": episodes("base", 0.32, rng), "grpo": episodes("grpo", 0.5, rng)}
    personas = {f"task-{i:03d}": PERSONAS[i % len(PERSONAS)] for i in range(N_TASKS)}

    start = time.perf_counter()
    compare(policies, personas, bootstrap_samples=1)
    point_s = time.perf_counter() - start
    start = time.perf_counter()
    result = compare(policies, personas, bootstrap_samples=2000)
    boot_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_report(result, Path(tmp))
        report_s = time.perf_counter() - start

    figures = {
        "tasks": float(N_TASKS),
        "slices": float(len(result.slices)),
        "point_s": point_s,
        "bootstrap_2000_s": boot_s,
        "bootstrap_vs_point": boot_s / point_s,
        "report_s": report_s,
        "report_vs_point": report_s / point_s,
    }
    print(f"eval compare, {N_TASKS} tasks x 2 policies, {len(result.slices)} slices")
    print(f"{'measure':<32}{'seconds':>10}{'ratio':>10}  baseline")
    print(f"{'compare, point estimates':<32}{point_s:>10.3f}{1.0:>10.2f}  itself")
    print(f"{'compare, 2000 bootstrap':<32}{boot_s:>10.3f}{figures['bootstrap_vs_point']:>10.2f}  point estimates")
    print(
        f"{'write report (md, json, 2 PNG)':<32}{report_s:>10.3f}{figures['report_vs_point']:>10.2f}  point estimates"
    )
    return figures


if __name__ == "__main__":
    main()
