"""Evaluation: the ClawGym metrics, matched comparison of policies with bootstrap intervals, pass@k, reports."""

from fieldkit.eval.compare import Comparison, Delta, MetricValues, SliceResult, compare, trial_metrics
from fieldkit.eval.inputs import EvalInputError, load_episodes, load_personas
from fieldkit.eval.metrics import METRICS, RATE_METRICS, pass_at_k
from fieldkit.eval.report import render_markdown, write_report

__all__ = [
    "METRICS",
    "RATE_METRICS",
    "Comparison",
    "Delta",
    "EvalInputError",
    "MetricValues",
    "SliceResult",
    "compare",
    "load_episodes",
    "load_personas",
    "pass_at_k",
    "render_markdown",
    "trial_metrics",
    "write_report",
]
