"""The evaluation report on disk: report.md (tables), report.json (every number), and PNG figures.

The Markdown is a pure function of the Comparison, so rebuilding a report from the same episode files (and the same
bootstrap seed) gives the same text. Every file is written atomically: a reader never sees half a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fieldkit.eval.compare import Comparison, Delta, MetricValues, SliceResult
from fieldkit.eval.metrics import METRICS
from fieldkit.eval.plots import grouped_bars, training_curves
from fieldkit.lineage.records import Trial
from fieldkit.runs import atomic_write_bytes

TITLES = {
    "task_pass": "task pass",
    "per_assertion": "per-assertion",
    "per_assertion_net": "per-assertion net of floor",
    "task_complete": "task_complete",
    "mean_turns": "mean turns",
    "mean_wall_s": "mean wall / task",
}
FIGURES = {
    "per_persona.png": "Task pass and per-assertion by persona",
    "per_kind.png": "Per-assertion by assertion kind",
    "training_curves.png": "Training curves from the lineage store",
}


def value_cell(values: MetricValues, metric: str) -> str:
    if metric == "task_pass":
        return f"{values.episodes_passed}/{values.n_episodes} ({_percent(values.task_pass)})"
    if metric == "per_assertion":
        if values.per_assertion is None:
            return "—"
        return f"{values.assertions_passed}/{values.assertions_total} ({_percent(values.per_assertion)})"
    if metric == "per_assertion_net":
        if values.per_assertion_net is None or values.assertions_floor is None:
            return "—"
        above, room = (
            values.assertions_passed - values.assertions_floor,
            values.assertions_total - values.assertions_floor,
        )
        return f"{above}/{room} ({_percent(values.per_assertion_net)})"
    if metric == "task_complete":
        return f"{values.episodes_complete}/{values.n_episodes} ({_percent(values.task_complete)})"
    if metric == "mean_turns":
        return f"{values.mean_turns:.2f}"
    return f"{values.mean_wall_s:.1f} s"


def delta_cell(delta: Delta) -> str:
    if delta.value is None:
        return "—"
    digits = 2 if delta.unit == "turns" else 1
    unit = {"pp": " pp", "s": " s", "turns": ""}[delta.unit]
    interval = (
        "" if delta.low is None or delta.high is None else f" [{delta.low:+.{digits}f}, {delta.high:+.{digits}f}]"
    )
    p_value = "" if delta.p_value is None else f" p={delta.p_value:.2g}"
    return f"{delta.value:+.{digits}f}{unit}{interval}{p_value}"


def _percent(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def others(comparison: Comparison) -> list[str]:
    """The policies with deltas: every one but the baseline, in order."""
    return [p for p in comparison.policies if p != comparison.baseline]


def render_markdown(comparison: Comparison, figures: Sequence[str] = ()) -> str:
    policies = comparison.policies
    deltas = others(comparison)
    headline = comparison.slice("all")
    level = f"{100 * comparison.confidence:g}%"
    where = f" of the {comparison.split} split" if comparison.split else ""
    lines = [
        f"# Evaluation: {' vs '.join(policies)}",
        "",
        f"{len(comparison.task_ids)} tasks{where}, matched: every policy ran the same tasks. "
        f"Baseline: `{comparison.baseline}`.",
    ]
    if deltas:
        lines.append(
            f"Deltas are against the baseline, in percentage points (pp) for rates; [low, high] is a paired bootstrap "
            f"{level} interval over tasks ({comparison.bootstrap_samples} resamples, seed {comparison.seed}); p is a "
            "two-sided exact sign test over tasks (on task pass with one episode a task: exact McNemar)."
        )
    lines.append(
        "Per-assertion net of floor counts only the assertions the untouched seeded workspace does not already pass."
    )
    lines += ["", "## Headline", "", *_table(["metric", *policies, *(f"Δ {p}" for p in deltas)])]
    for metric in METRICS:
        cells = [TITLES[metric], *(value_cell(headline.values[p], metric) for p in policies)]
        lines.append(_row(cells + [delta_cell(headline.deltas[p][metric]) for p in deltas]))
    lines += ["", "## pass@k (unbiased estimator)", "", *_table(["k", *policies])]
    for k in sorted(next(iter(comparison.pass_at_k.values()))):
        lines.append(_row([str(k), *(_percent(comparison.pass_at_k[p][k]) for p in policies)]))
    for group, heading, label in (("persona", "Per persona", "persona"), ("kind", "Per assertion kind", "kind")):
        slices = [s for s in comparison.slices if s.group == group]
        lines += ["", f"## {heading}"]
        for metric in METRICS:
            lines += [
                "",
                f"### {TITLES[metric]}",
                "",
                *_table([label, "tasks", *policies, *(f"Δ {p}" for p in deltas)]),
            ]
            lines += [_slice_row(s, metric, policies, deltas) for s in slices]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{FIGURES[name]}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _slice_row(found: SliceResult, metric: str, policies: Sequence[str], deltas: Sequence[str]) -> str:
    first = found.values[policies[0]]
    cells = [found.name, str(first.n_tasks), *(value_cell(found.values[p], metric) for p in policies)]
    return _row(cells + [delta_cell(found.deltas[p][metric]) for p in deltas])


def _table(header: Sequence[str]) -> list[str]:
    return [_row(header), _row(["---"] * len(header))]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def write_report(comparison: Comparison, out_dir: Path, curve_trials: Sequence[Trial] = ()) -> list[Path]:
    """Write report.md, report.json and the figures under `out_dir`; returns the paths written.

    `curve_trials` (one run's trials from the lineage store) adds training_curves.png when it holds steps or gates.
    """
    figures: dict[str, bytes] = {
        "per_persona.png": grouped_bars(
            comparison, "persona", ["task_pass", "per_assertion"], FIGURES["per_persona.png"]
        ),
        "per_kind.png": grouped_bars(comparison, "kind", ["per_assertion"], FIGURES["per_kind.png"]),
    }
    if any(t.step is not None and t.kind in ("rl-step", "validation-gate") for t in curve_trials):
        figures["training_curves.png"] = training_curves(curve_trials, FIGURES["training_curves.png"])
    written = []
    for name, data in figures.items():
        atomic_write_bytes(out_dir / name, data)
        written.append(out_dir / name)
    atomic_write_bytes(out_dir / "report.json", (comparison.model_dump_json(indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "report.md", render_markdown(comparison, list(figures)).encode())
    return [*written, out_dir / "report.json", out_dir / "report.md"]
