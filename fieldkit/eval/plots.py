"""PNG figures of a report: per-persona bars, per-assertion-kind bars, and training curves from the lineage store.

matplotlib is imported inside each function with the Agg backend (no display, no GUI toolkit), so importing
fieldkit stays light and plotting works on a headless box or inside a Ray worker.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from fieldkit.eval.compare import Comparison
from fieldkit.lineage.queries import best_of
from fieldkit.lineage.records import Trial


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def grouped_bars(comparison: Comparison, group: str, metrics: Sequence[str], title: str) -> bytes:
    """One panel per metric (rates, in %), one bar per policy for each slice of `group` ('persona' or 'kind')."""
    import numpy as np

    plt = _pyplot()
    slices = [s for s in comparison.slices if s.group == group]
    names = [s.name for s in slices]
    size = (max(6.0, 1.1 * len(names) + 2), 3.6 * len(metrics))
    figure, axes = plt.subplots(len(metrics), 1, figsize=size, layout="constrained")
    axes = np.atleast_1d(axes)
    width = 0.8 / len(comparison.policies)
    positions = np.arange(len(names))
    for axis, metric in zip(axes, metrics, strict=True):
        for i, policy in enumerate(comparison.policies):
            heights = [_percent(getattr(s.values[policy], metric)) for s in slices]
            axis.bar(positions + (i - (len(comparison.policies) - 1) / 2) * width, heights, width, label=policy)
        axis.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        axis.set_ylim(0, 100)
        axis.set_xticks(positions, names, rotation=30, ha="right")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(loc="upper right", fontsize="small")
    return _png(figure)


def _percent(value: float | None) -> float:
    return 0.0 if value is None else 100.0 * value


def training_curves(trials: Sequence[Trial], title: str) -> bytes:
    """Core metric against step, one line per (kind, metric name), the store's best marked: a curve that climbs on
    the training pool while validation falls is visible at a glance."""
    plt = _pyplot()
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for trial in trials:
        if trial.step is not None and trial.metric is not None and trial.kind in ("rl-step", "validation-gate"):
            series.setdefault((trial.kind, trial.metric_name or "metric"), []).append((trial.step, trial.metric))
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(7.5, 4.0), layout="constrained")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for (kind, name), points in sorted(series.items()):
        points.sort()
        style = "o-" if kind == "validation-gate" else ".-"
        axis.plot([p[0] for p in points], [p[1] for p in points], style, label=f"{name} ({kind})")
    best = best_of(trials)
    if best is not None and best.step is not None:
        axis.plot([best.step], [best.metric], "*", markersize=16, color="gold", markeredgecolor="black", label="best")
    axis.set_xlabel("step")
    axis.set_ylabel("metric")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    if series:
        axis.legend(fontsize="small")
    return _png(figure)
