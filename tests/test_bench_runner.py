"""The benchmark runner (`make bench`) on fake benchmark modules written to tmp_path: one that passes, one that
raises, one that hangs past its limit, and one whose main() returns no dict. Fakes, because a real benchmark that
fails or hangs on demand is a fault we cannot otherwise cause; the runner itself, its child processes, the kill of
a hung one, the table and the JSON report are all real."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bench.run import discover, main, ratios, run_all

FAKES = {
    "passing": """
        def main():
            print("passing bench: baseline 2.0 s, ours 0.5 s")
            cases = [{"case": "a", "peak_ratio": 1.1}]
            return {"baseline_s": 2.0, "ours_s": 0.5, "baseline_over_ours": 4.0, "cases": cases}
    """,
    "failing": """
        def main():
            print("failing bench: about to raise")
            raise RuntimeError("the engine would not start")
    """,
    "hanging": """
        import time

        def main():
            print("hanging bench: sleeping", flush=True)
            time.sleep(600)
    """,
    "no_dict": """
        def main():
            return 3.0
    """,
    "helper_without_main": """
        VALUE = 1
    """,
}


@pytest.fixture
def fake_bench(tmp_path: Path) -> Path:
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in FAKES.items():
        (package / f"{name}.py").write_text(textwrap.dedent(source))
    return package


def test_discovery_finds_modules_with_a_main(fake_bench: Path) -> None:
    assert sorted(discover(fake_bench)) == ["failing", "hanging", "no_dict", "passing"]


def test_the_real_bench_directory_is_discovered_without_the_runner() -> None:
    names = discover()
    assert "run" not in names and "gpu_check" not in names
    assert {"lineage_store", "learner", "planner_memory"} <= set(names)


def test_ratios_are_picked_and_case_rows_flattened() -> None:
    figures = {"x_s": 1.0, "a_vs_b": 2.0, "goal_met": True, "cases": [{"case": "tiny", "peak_ratio": 0.9, "mb": 3}]}
    assert ratios(figures) == {"a_vs_b": 2.0, "tiny: peak_ratio": 0.9}


def test_a_failing_and_a_hanging_benchmark_are_rows_not_crashes(fake_bench: Path) -> None:
    outcomes = run_all(
        ["passing", "failing", "hanging", "no_dict"],
        package="fakebench",
        cwd=fake_bench.parent,
        limits_s={"hanging": 15},
    )
    by_name = {o.name: o for o in outcomes}
    assert by_name["passing"].status == "ok"
    assert by_name["passing"].figures["baseline_over_ours"] == 4.0
    assert by_name["failing"].status == "failed"
    assert "RuntimeError: the engine would not start" in (by_name["failing"].error or "")
    assert any("about to raise" in line for line in by_name["failing"].output_tail)
    assert by_name["hanging"].status == "timeout"
    assert any("sleeping" in line for line in by_name["hanging"].output_tail)
    assert by_name["no_dict"].status == "failed" and "not a dict" in (by_name["no_dict"].error or "")


def test_the_run_budget_skips_what_no_longer_fits(fake_bench: Path) -> None:
    outcomes = run_all(["passing", "failing"], package="fakebench", cwd=fake_bench.parent, budget_s=5)
    assert [o.status for o in outcomes] == ["skipped", "skipped"]


def test_the_command_prints_the_table_and_writes_the_json(
    fake_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports"
    code = main(["--bench-dir", str(fake_bench), "--only", "passing", "failing", "--out", str(out)])
    assert code == 1  # a failed benchmark fails the run, after the table and the report
    printed = capsys.readouterr().out
    assert "baseline_over_ours" in printed and "a: peak_ratio" in printed and "failed" in printed
    [report_path] = out.glob("*.json")
    report = json.loads(report_path.read_text())
    assert report["quick"] is True
    assert report["benchmarks"]["passing"]["status"] == "ok"
    assert report["benchmarks"]["passing"]["figures"]["ours_s"] == 0.5
    assert report["benchmarks"]["failing"]["status"] == "failed"
    assert "the engine would not start" in report["benchmarks"]["failing"]["error"]
    assert str(report_path) in printed


def test_an_unknown_benchmark_name_is_refused(fake_bench: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--bench-dir", str(fake_bench), "--only", "nope"])
