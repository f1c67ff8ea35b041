"""Evaluation: the ClawGym metrics (with per-assertion net of the seed's floor), matched comparison of policies with
bootstrap intervals and a paired sign test, pass@k, reports."""

from fieldkit.eval.compare import Comparison, Delta, MetricValues, SliceResult, compare, sign_test, trial_metrics
from fieldkit.eval.inputs import EvalInputError, load_episodes, load_floors, load_personas
from fieldkit.eval.metrics import METRICS, RATE_METRICS, pass_at_k
from fieldkit.eval.outcomes import task_floors
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
    "load_floors",
    "load_personas",
    "pass_at_k",
    "render_markdown",
    "sign_test",
    "task_floors",
    "trial_metrics",
    "write_report",
]
