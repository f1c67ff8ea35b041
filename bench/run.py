"""`make bench`: every benchmark in bench/, one after another, each in its own process with a time limit; one table
of their ratios against the baselines they measured in the same run; the figures as JSON under runs/bench/.

A benchmark is a module `bench/<name>.py` with a `main()` that prints its own table and returns a dict of figures.
Each runs in a child process (`python -m bench.run --child NAME`): a benchmark that hangs is killed with everything
it started (Ray, an engine) when its limit passes, one that raises becomes a row with its error, and no state (Ray,
torch threads, peak RSS) leaks from one benchmark into the next. The whole run keeps to a budget: a benchmark gets
at most what is left of it, and those that no longer fit are listed as skipped.

Quick mode (the default) passes the smaller parameters some benchmarks take, so the run fits 15 minutes on a
2-core box; `--full` runs every benchmark at its own defaults.

Run: `python -m bench.run [--only NAME ...] [--full] [--budget-s 840] [--out runs/bench]`.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
NOT_BENCHMARKS = {"run", "gpu_check"}  # this runner, and the GPU machine's check (bench/gpu_check.sh)
BUDGET_S = 840.0  # the whole run: 14 minutes, under the 15
DEFAULT_LIMIT_S = 240.0  # one benchmark, unless LIMITS_S says otherwise
# two vLLM engine starts each (adapter_hotload, pipeline_step); five training processes (planner_memory)
LIMITS_S = {"adapter_hotload": 360.0, "planner_memory": 300.0, "pipeline_step": 360.0}
# The order: cheap ones first, so a slow machine loses the expensive ones to the budget, not the other way round.
ORDER = ["lineage_store", "eval_compare", "gym_corpus", "sandbox_overhead", "learner", "planner_memory"]
OUTPUT_TAIL_LINES = 30  # of a failed benchmark's output, kept in the JSON

# Quick parameters, by benchmark: called with the imported module, returning main()'s keyword arguments.
QUICK_KWARGS: dict[str, Callable[[ModuleType], dict[str, Any]]] = {
    "sandbox_overhead": lambda module: {"n": 30},
    "mesh_throughput": lambda module: {"episodes": 16},
    "pipeline_step": lambda module: {"steps": 4},
    # The tiny model's cases plus the medium LoRA one (the memory model at a size where weights dominate); the
    # medium full-fine-tuning and checkpointing cases add minutes and are in `--full`.
    "planner_memory": lambda module: {
        "cases": [c for c in module.CASES if c.model == "tiny" or c.name == "medium lora"]
    },
}
RATIO_MARKERS = ("_vs_", "_over_", "ratio", "speedup")  # how a benchmark names a figure that is a ratio


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    output_tail: list[str] = field(default_factory=list)


def discover(directory: Path = BENCH_DIR) -> list[str]:
    """Module names in `directory` that define a top-level `main` (read from the source; nothing is imported)."""
    names = []
    for path in sorted(directory.glob("*.py")):
        if path.stem.startswith("_") or path.stem in NOT_BENCHMARKS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.append(path.stem)
    ranked = {name: i for i, name in enumerate(ORDER)}
    return sorted(names, key=lambda name: (ranked.get(name, len(ORDER)), name))


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """The figures that are ratios against a baseline, flattened: a list of rows with a `case` (planner_memory)
    gives `<case>: <figure>`."""
    found: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict):
                    label = str(row.get("case", i))
                    found.update({f"{label}: {k}": v for k, v in ratios(row).items()})
        elif isinstance(value, int | float) and not isinstance(value, bool) and any(m in key for m in RATIO_MARKERS):
            found[key] = float(value)
    return found


def run_child(package: str, name: str, quick: bool, result_path: str) -> int:
    """In the child process: import the benchmark, call its main(), write its figures (or its error) as JSON."""
    try:
        module = importlib.import_module(f"{package}.{name}")
        kwargs = QUICK_KWARGS[name](module) if quick and name in QUICK_KWARGS else {}
        figures = module.main(**kwargs)
        if not isinstance(figures, dict):
            raise TypeError(f"{name}.main() returned {type(figures).__name__}, not a dict of figures")
        payload: dict[str, Any] = {"figures": figures}
    except BaseException as exc:
        payload = {"error": f"{type(exc).__name__}: {exc}"}
        import traceback

        traceback.print_exc()
    Path(result_path).write_text(json.dumps(payload, default=_jsonable))
    return 0 if "figures" in payload else 1


def _jsonable(value: Any) -> Any:
    """Figures that are not JSON types (paths, dataclasses) are written as their text."""
    return str(value)


def run_benchmark(
    name: str, limit_s: float, *, package: str = "bench", quick: bool = True, cwd: Path = REPO
) -> Outcome:
    """Run one benchmark in a child process of its own session, echoing its output; kill its whole process group
    once `limit_s` passes."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.run", "--child", name, "--package", package]
        command += ["--result", str(result_path), *(["--quick"] if quick else [])]
        # RAY_ADDRESS=local: a benchmark's ray.init() starts its own Ray, never joins a cluster that `ray start` left
        # running on this host (it would refuse the benchmark's num_cpus, or measure someone else's load)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "local"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), str(REPO), env.get("PYTHONPATH", "")) if p)
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        start = time.perf_counter()
        child = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a timeout kills Ray and engine processes with it
        )
        echo = threading.Thread(target=_echo, args=(child.stdout, tail), daemon=True)
        echo.start()
        try:
            child.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            _kill_group(child)
            echo.join(timeout=5)
            return Outcome(
                name,
                "timeout",
                time.perf_counter() - start,
                error=f"killed after {limit_s:.0f} s",
                output_tail=list(tail),
            )
        echo.join(timeout=5)
        seconds = time.perf_counter() - start
        _kill_group(child)  # whatever the benchmark left running (a Ray it did not shut down)
        try:
            payload = json.loads(result_path.read_text())
        except (OSError, ValueError):
            payload = {"error": f"exited with code {child.returncode} without a result"}
    if "figures" in payload:
        return Outcome(name, "ok", seconds, figures=payload["figures"])
    return Outcome(name, "failed", seconds, error=payload["error"], output_tail=list(tail))


def _echo(stream: Any, tail: collections.deque[str]) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line.rstrip("\n"))


def _kill_group(child: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def run_all(
    names: Sequence[str],
    *,
    budget_s: float = BUDGET_S,
    package: str = "bench",
    quick: bool = True,
    cwd: Path = REPO,
    limits_s: dict[str, float] | None = None,
) -> list[Outcome]:
    limits = {**LIMITS_S, **(limits_s or {})}
    deadline = time.monotonic() + budget_s
    outcomes = []
    for name in names:
        left = deadline - time.monotonic()
        limit = min(limits.get(name, DEFAULT_LIMIT_S), left)
        if limit < 10:
            outcomes.append(Outcome(name, "skipped", error=f"the run's {budget_s:.0f} s budget was spent"))
            continue
        print(f"\n=== bench {name} (limit {limit:.0f} s)", flush=True)
        outcomes.append(run_benchmark(name, limit, package=package, quick=quick, cwd=cwd))
    return outcomes


def print_table(outcomes: list[Outcome]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("benchmark", "status", "s", "ratio (against the benchmark's own baseline)", "value", title="bench")
    for outcome in outcomes:
        seconds = f"{outcome.seconds:.0f}" if outcome.status != "skipped" else ""
        found = ratios(outcome.figures)
        if outcome.status != "ok":
            table.add_row(outcome.name, f"[red]{outcome.status}[/red]", seconds, outcome.error or "", "")
        elif not found:
            table.add_row(outcome.name, "ok", seconds, f"(no ratio figures; {len(outcome.figures)} figures)", "")
        for i, (key, value) in enumerate(found.items()):
            first = i == 0
            table.add_row(
                outcome.name if first else "", "ok" if first else "", seconds if first else "", key, f"{value:.3g}"
            )
        table.add_section()
    Console(width=140).print(table)


def write_json(outcomes: list[Outcome], out_dir: Path, *, quick: bool, started: datetime) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report = {
        "started": started.isoformat(),
        "quick": quick,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "benchmarks": {o.name: {k: v for k, v in asdict(o).items() if k != "name"} for o in outcomes},
    }
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(report, indent=2, default=_jsonable))
    staging.replace(path)  # a reader never sees half a report
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these benchmarks only")
    parser.add_argument("--full", action="store_true", help="each benchmark's own defaults, not the quick ones")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench", help="where the JSON report goes")
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help="the package of benchmark modules")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--package", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.package, args.child, args.quick, args.result)

    bench_dir = args.bench_dir.resolve()
    available = discover(bench_dir)
    names = args.only or available
    unknown = sorted(set(names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; in {bench_dir}: {', '.join(available)}")
    started = datetime.now(UTC)
    outcomes = run_all(names, budget_s=args.budget_s, package=bench_dir.name, quick=not args.full, cwd=bench_dir.parent)
    print()
    print_table(outcomes)
    path = write_json(outcomes, args.out, quick=not args.full, started=started)
    failed = [o.name for o in outcomes if o.status != "ok"]
    print(f"figures: {path}" + (f"; not ok: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
