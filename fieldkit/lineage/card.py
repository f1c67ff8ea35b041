"""The rendered lineage card: what has been tried, what won, and how each attempt ended, as Markdown.

Sections: current best; the chain root -> best; top-k kept; the recent n; the last m with full hypothesis and notes.
The text is a pure function of the trials (in store order) and the sizes: no clock, no locale, fixed number formats,
so the same database state renders the same bytes and a reader can diff two cards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fieldkit.lineage.queries import chain_to, ranked, rl_runs
from fieldkit.lineage.records import STATUSES, Trial

HYPOTHESIS_CLIP = 100
CHAIN_CLIP = 80


@dataclass(frozen=True)
class CardSizes:
    top_k: int = 10
    recent_n: int = 20
    last_m: int = 5


def render_card(trials: Sequence[Trial], run_id: str | None, sizes: CardSizes) -> str:
    """`trials` is every trial of the store, oldest first (chains may cross runs); `run_id` narrows the card."""
    by_id = {t.trial_id: t for t in trials}
    scope = [t for t in trials if run_id is None or t.run_id == run_id]
    order = ranked(scope)
    best = order[0] if order else None
    lines = [f"# Lineage card: {'run `' + run_id + '`' if run_id else 'all runs'}", "", _status_line(scope)]
    if rl_runs(scope):
        lines.append(
            "Selection: in RL runs only validation gates compete for best (training-pool scores never do; "
            "the test split is only reported)."
        )
    lines += ["", "## Current best", ""]
    lines += _best_section(best)
    lines += ["", "## Chain root → best", ""]
    lines += _chain_section(by_id, best)
    kept = [t for t in order if t.status == "keep"]
    lines += ["", f"## Top kept ({min(sizes.top_k, len(kept))} of {len(kept)})", ""]
    lines += _top_section(kept[: sizes.top_k], best)
    recent = list(reversed(scope[-sizes.recent_n :])) if sizes.recent_n > 0 else []
    lines += ["", f"## Recent ({len(recent)}, newest first)", ""]
    lines += _recent_section(recent)
    last = list(reversed(scope[-sizes.last_m :])) if sizes.last_m > 0 else []
    lines += ["", f"## Last {len(last)} in full", ""]
    lines += _full_section(last)
    return "\n".join(lines).rstrip("\n") + "\n"


def _status_line(scope: Sequence[Trial]) -> str:
    counts: Counter[str] = Counter(t.status for t in scope)
    parts = [f"{status} {counts[status]}" for status in STATUSES if counts[status]]
    return f"{len(scope)} trials" + (": " + ", ".join(parts) if parts else "")


def _best_section(best: Trial | None) -> list[str]:
    if best is None:
        return ["*(no completed trial with a metric yet)*"]
    lines = [
        f"- trial: `{best.trial_id}` ({_where(best)}, status {best.status})",
        f"- {best.metric_name or 'metric'}: {_num(best.metric)} ({_goal(best)})",
        f"- hypothesis: {_one_line(best.hypothesis) or '—'}",
    ]
    if best.artifacts:
        lines.append("- artifacts: " + ", ".join(f"{k} `{v}`" for k, v in sorted(best.artifacts.items())))
    if best.config_hash:
        lines.append(f"- config: `{best.config_hash}`" + (f", code `{best.code_version}`" if best.code_version else ""))
    return lines


def _chain_section(by_id: dict[str, Trial], best: Trial | None) -> list[str]:
    if best is None:
        return ["*(no best yet)*"]
    lines = ["```"]
    for depth, trial in enumerate(chain_to(by_id, best.trial_id)):
        prefix = "" if depth == 0 else "└─ "
        marker = "  ← best" if trial is best else ""
        lines.append(
            f"{prefix}{trial.trial_id} [{_where(trial)}, {trial.status}, {_num(trial.metric)}] "
            f"{_clip(trial.hypothesis, CHAIN_CLIP)}{marker}"
        )
    lines.append("```")
    return lines


def _top_section(kept: Sequence[Trial], best: Trial | None) -> list[str]:
    if not kept or best is None or best.metric is None:
        return ["*(no kept trials yet)*"]
    lines = ["| # | trial | kind | step | metric | Δ vs best | hypothesis |", "|---|---|---|---|---|---|---|"]
    for rank, trial in enumerate(kept, start=1):
        delta = None if trial.metric is None else trial.metric - best.metric
        lines.append(
            f"| {rank} | `{trial.trial_id}` | {trial.kind} | {_step(trial)} | {_num(trial.metric)} "
            f"| {_num(delta, signed=True)} | {_cell(trial.hypothesis)} |"
        )
    return lines


def _recent_section(recent: Sequence[Trial]) -> list[str]:
    if not recent:
        return ["*(no trials yet)*"]
    lines = ["| trial | kind | step | status | metric | hypothesis |", "|---|---|---|---|---|---|"]
    for trial in recent:
        lines.append(
            f"| `{trial.trial_id}` | {trial.kind} | {_step(trial)} | {trial.status} | {_num(trial.metric)} "
            f"| {_cell(trial.hypothesis)} |"
        )
    return lines


def _full_section(last: Sequence[Trial]) -> list[str]:
    if not last:
        return ["*(no trials yet)*"]
    lines: list[str] = []
    for trial in last:
        lines += [
            f"### `{trial.trial_id}` · {_where(trial)} · {trial.status} · {trial.metric_name or 'metric'} "
            f"{_num(trial.metric)}",
            "",
            f"Hypothesis: {trial.hypothesis.strip() or '—'}",
            "",
            f"Notes: {trial.notes.strip() or '—'}",
            "",
        ]
    return lines


def _where(trial: Trial) -> str:
    return trial.kind if trial.step is None else f"{trial.kind} step {trial.step}"


def _step(trial: Trial) -> str:
    return "—" if trial.step is None else str(trial.step)


def _goal(trial: Trial) -> str:
    return "higher is better" if trial.direction == "max" else "lower is better"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.6f}" if signed else f"{value:.6f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    flat = _one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _cell(text: str) -> str:
    return _clip(text, HYPOTHESIS_CLIP).replace("|", "\\|") or "—"
