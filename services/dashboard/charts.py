"""Which training curves share a chart: grouped by meaning and unit, never by the metric name's prefix, so one
y axis never holds 430 assistant tokens beside a clip fraction of 0.

Each group names its unit; a metric goes to the first group whose pattern matches its dotted name (`train.reward`,
`learner.kl`, `validation.task_pass`), and a metric no group knows gets a chart of its own rather than a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# (title, unit, pattern), in the order the charts are shown
GROUPS: list[tuple[str, str, re.Pattern[str]]] = [
    ("rewards and rates", "reward, fraction",
     re.compile(r"\.(reward|task_pass|task_complete|per_assertion|per_assertion_net)$")),
    ("turns per episode", "turns", re.compile(r"\.mean_turns$")),
    ("losses", "loss", re.compile(r"(^|\.)\w*loss\w*$")),
    ("ratios π_θ/π_old before the update", "ratio", re.compile(r"^learner\.ratio_")),
    ("KL", "nats per token", re.compile(r"^learner\.(kl|mismatch_kl)$")),
    ("entropy", "nats per token", re.compile(r"^learner\.entropy$")),  # ~1-10: beside a KL of 0.01 it flattens it
    ("clipped, masked and stale shares", "fraction",
     re.compile(r"^(learner\.(clip_fraction|is_masked_frac)|rollout\.stale_turn_share|validation\.is_best)$")),
    ("update size", "norm", re.compile(r"^learner\.(grad_norm|weight_delta_\w+)$")),
    ("throughput", "tokens/s", re.compile(r"tokens_per_s$")),
    ("tokens per step", "tokens", re.compile(r"^learner\.(assistant_)?tokens$")),
    ("episodes, groups and faults per step", "count",
     re.compile(r"\.(n_episodes|n_tasks|groups|zero_signal_groups|failed|sequences|micro_batches|template_mismatches)$")),
    ("time", "seconds", re.compile(r"(^wall\.|_s$)")),
    ("adapter versions", "version", re.compile(r"^policy\.\w+_version$")),
]  # fmt: skip


def chart_groups(names: Iterable[str]) -> list[dict[str, Any]]:
    """The charts for these metric names: [{title, unit, metrics}] in GROUPS order, then one chart per metric that
    no group knows (titled by its name, unit unknown)."""
    grouped: dict[str, list[str]] = {title: [] for title, _, _ in GROUPS}
    alone: list[str] = []
    for name in sorted(set(names)):
        title = next((title for title, _, pattern in GROUPS if pattern.search(name)), None)
        (grouped[title] if title else alone).append(name)
    charts = [{"title": title, "unit": unit, "metrics": grouped[title]} for title, unit, _ in GROUPS if grouped[title]]
    return charts + [{"title": name, "unit": "", "metrics": [name]} for name in alone]


GATE_CHARTS = ("rewards and rates", "turns per episode")  # what a gate measures; its counts and walls are in the card


def gate_chart_groups(names: Iterable[str]) -> list[dict[str, Any]]:
    """The validation gates' charts: their rewards and rates, and their turns."""
    return [chart for chart in chart_groups(names) if chart["title"] in GATE_CHARTS]
