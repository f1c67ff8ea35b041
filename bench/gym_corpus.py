"""The ClawGym corpus: generating the 200 tasks, proving their oracles per sandbox backend, and grading.

Baselines measured in the same run: the reference harness's way of running an oracle (bash in a plain temp dir,
no isolation) for the oracle costs, and grading an in-memory snapshot for grading a directory on disk.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from fieldkit.gym.generator import generate_tasks
from fieldkit.gym.grader import grade
from fieldkit.gym.oracle import check_tasks
from fieldkit.gym.records import WorkspaceSeed
from sandbox import available_backends
from sandbox.runner import oracle_runner

SAMPLE_PER_PERSONA = (0, 5, 9)  # an easy, a medium and a hard task of each persona for the slower backends


def materialise(seed: WorkspaceSeed, root: Path) -> None:
    for f in seed.files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.content.encode() if f.kind == "text" else bytes(f.size or 0))


def main() -> dict[str, float]:
    start = time.perf_counter()
    tasks = generate_tasks(25, 0)
    generate_s = time.perf_counter() - start
    sample = [t for t in tasks if int(t.task_id[-3:]) in SAMPLE_PER_PERSONA]

    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        start = time.perf_counter()
        for task in sample:
            root = Path(tmp) / task.task_id
            materialise(task.workspace_seed, root)
            for command in task.reference_solution:
                subprocess.run(["bash", "-c", command], cwd=root, capture_output=True, timeout=10, check=True)
            dirs.append(root)
        bare_s = (time.perf_counter() - start) / len(sample)

        start = time.perf_counter()
        directory_grades = [grade(task, root) for task, root in zip(sample, dirs, strict=True)]
        grade_dir_s = (time.perf_counter() - start) / len(sample)

    per_backend: dict[str, float] = {}
    snapshots = []
    for backend in ["local", *[b for b in available_backends() if b != "local"]]:
        runner = oracle_runner(backend)
        start = time.perf_counter()
        verdicts = list(check_tasks(sample, runner, workers=1))
        per_backend[backend] = (time.perf_counter() - start) / len(sample)
        assert all(v.ok for v in verdicts), [v.problems for v in verdicts if not v.ok]
        if backend == "local":
            snapshots = [runner(t.workspace_seed, t.reference_solution).snapshot for t in sample]

    start = time.perf_counter()
    snapshot_grades = [grade(task, snap) for task, snap in zip(sample, snapshots, strict=True)]
    grade_snap_s = (time.perf_counter() - start) / len(sample)
    assert [g.passed for g in snapshot_grades] == [g.passed for g in directory_grades] == [True] * len(sample)

    figures = {
        "tasks": float(len(tasks)),
        "assertions": float(sum(len(t.verifiable_assertions) for t in tasks)),
        "generate_s": generate_s,
        "sample_tasks": float(len(sample)),
        "bare_oracle_s_per_task": bare_s,
        **{f"{b}_oracle_s_per_task": s for b, s in per_backend.items()},
        **{f"{b}_vs_bare": s / bare_s for b, s in per_backend.items()},
        "grade_snapshot_ms_per_task": grade_snap_s * 1000,
        "grade_directory_ms_per_task": grade_dir_s * 1000,
        "directory_vs_snapshot": grade_dir_s / grade_snap_s,
    }
    print(f"ClawGym corpus: {len(tasks)} tasks generated in {generate_s:.2f} s; oracles on {len(sample)} tasks")
    print(f"{'measure':<36}{'per task':>12}{'ratio':>10}  baseline")
    print(f"{'oracle, bash in a temp dir':<36}{bare_s * 1000:>10.1f}ms{1.0:>10.2f}  itself")
    for backend, seconds in per_backend.items():
        print(
            f"{'oracle + grade, ' + backend + ' sandbox':<36}{seconds * 1000:>10.1f}ms{seconds / bare_s:>10.2f}  bare"
        )
    print(f"{'grade a snapshot':<36}{grade_snap_s * 1000:>10.2f}ms{1.0:>10.2f}  itself")
    ratio = grade_dir_s / grade_snap_s
    print(f"{'grade a directory (O_NOFOLLOW walk)':<36}{grade_dir_s * 1000:>10.2f}ms{ratio:>10.2f}  snapshot")
    return figures


if __name__ == "__main__":
    main()
