"""The demo's result as one JSON object per seed, and the README's demo table rendered from runs' report files.

The object (`fieldkit demo --json` prints it; runs/<run>/report/summary.json holds it):

    {"seed", "split": "test", "n_tasks",
     "policies": {"base" | "sft" | "rl": {"task_pass", "per_assertion", "per_assertion_net", "task_complete",
                                         "mean_turns"}},
     "delta_rl_sft": {metric: {"pp" ("turns" for mean_turns), "ci95": [lo, hi], "p_value"}},
     "wall_s", "run", "rl_step", "validation_tasks"}

Rates are fractions; deltas are RL minus SFT, in percentage points (mean turns: in turns), with the paired bootstrap
95% interval over tasks and the exact sign test's p (see compare.py). A value that cannot be computed is null.
The README's demo section is rendered from report.json and summary.json of the runs named, between two marker lines,
so the numbers there are never typed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fieldkit.eval.compare import Comparison
from fieldkit.eval.report import TITLES, delta_cell, value_cell

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.json"
SUMMARY_METRICS = ("task_pass", "per_assertion", "per_assertion_net", "task_complete", "mean_turns")
POLICIES = ("base", "sft", "rl")
README_BEGIN = "<!-- demo-table: rendered by `fieldkit eval readme` from runs/<run>/report/; not edited by hand -->"
README_END = "<!-- /demo-table -->"


def demo_summary(
    comparison: Comparison,
    *,
    seed: int,
    wall_s: float,
    run: str,
    rl_step: int,
    validation_tasks: int,
    prior_accuracy: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The per-seed object from a comparison of base, sft and rl with sft as the baseline; `prior_accuracy`: the
    tiny agent's own accuracy on fresh prior chores, before any ClawGym data (None for other models)."""
    if comparison.policies != list(POLICIES) or comparison.baseline != "sft":
        raise ValueError(f"a demo summary needs policies {POLICIES} against 'sft', got {comparison.policies}")
    headline = comparison.slice("all")
    policies = {p: {m: getattr(headline.values[p], m) for m in SUMMARY_METRICS} for p in POLICIES}
    deltas = {}
    for metric in SUMMARY_METRICS:
        delta = headline.deltas["rl"][metric]
        unit = "turns" if metric == "mean_turns" else "pp"
        deltas[metric] = {unit: delta.value, "ci95": [delta.low, delta.high], "p_value": delta.p_value}
    return {
        "seed": seed,
        "split": comparison.split,
        "n_tasks": len(comparison.task_ids),
        "policies": policies,
        "delta_rl_sft": deltas,
        "wall_s": round(wall_s, 1),
        "run": run,
        "rl_step": rl_step,
        "validation_tasks": validation_tasks,
        "prior_accuracy": prior_accuracy,
    }


def load_run_report(run_dir: Path) -> tuple[dict[str, Any], Comparison]:
    """summary.json and report.json of one demo run; a missing file is named."""
    report = run_dir / "report"
    for name in (SUMMARY_FILE, REPORT_FILE):
        if not (report / name).exists():
            raise FileNotFoundError(f"{report / name} is missing: is {run_dir} a finished `fieldkit demo` run?")
    summary = json.loads((report / SUMMARY_FILE).read_text())
    return summary, Comparison.model_validate_json((report / REPORT_FILE).read_text())


def render_demo_tables(runs: Sequence[tuple[dict[str, Any], Comparison]]) -> str:
    """One table per run (base / SFT / RL on the test split, RL - SFT with its interval and p), then, for several
    runs, one line per seed of the RL - SFT deltas."""
    lines: list[str] = []
    for summary, comparison in runs:
        headline = comparison.slice("all")
        lines += [
            f"Seed {summary['seed']} (run `{summary['run']}`, {summary['wall_s'] / 60:.1f} min): "
            f"{summary['n_tasks']} tasks of the {summary['split']} split; RL is the adapter of step "
            f"{summary['rl_step']}, the best of the gates on {summary['validation_tasks']} validation tasks.",
            "",
            f"| {summary['split']}, {summary['n_tasks']} tasks | base | SFT | RL | RL − SFT [95% CI] p |",
            "| --- | --- | --- | --- | --- |",
        ]
        for metric in SUMMARY_METRICS:
            values = [value_cell(headline.values[p], metric) for p in POLICIES]
            lines.append(f"| {TITLES[metric]} | {' | '.join(values)} | {delta_cell(headline.deltas['rl'][metric])} |")
        lines.append("")
    priors = {json.dumps(s.get("prior_accuracy"), sort_keys=True) for s, _ in runs} - {"null"}
    for prior in sorted(priors):
        accuracy = json.loads(prior)
        program = accuracy.get("first_program")  # absent from builds before it was measured
        lines += [
            "The base model's own prior, before any ClawGym data, on fresh dialogues of its pretraining chores: "
            + (f"the first command's program right in {program:.0%}, " if program is not None else "")
            + f"the whole first command (names copied from the prompt) in {accuracy['first_command']:.0%}, "
            f"every reply in {accuracy['all_replies']:.0%}.",
            "",
        ]
    if len(runs) > 1:
        lines += [
            "RL − SFT on the test split, seed by seed:",
            "",
            "| seed | " + " | ".join(TITLES[m] for m in SUMMARY_METRICS) + " |",
            "| --- |" + " --- |" * len(SUMMARY_METRICS),
        ]
        for summary, comparison in runs:
            deltas = comparison.slice("all").deltas["rl"]
            lines.append(f"| {summary['seed']} | " + " | ".join(delta_cell(deltas[m]) for m in SUMMARY_METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def replace_between_markers(text: str, block: str) -> str:
    """`text` with everything between the README_BEGIN and README_END lines replaced by `block`."""
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README needs the marker lines {README_BEGIN!r} and then {README_END!r}")
    head = text[: begin + len(README_BEGIN)]
    return f"{head}\n\n{block.strip()}\n\n{text[end:]}"
