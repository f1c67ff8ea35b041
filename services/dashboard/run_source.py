"""What the dashboard shows of training runs, read from where the driver writes them; nothing is stored here.

- Per step: runs/<run>/steps/<step>/metrics.json (fieldkit.runs.RunDir), written atomically after each learner
  step, so a file is either absent or whole. Nested numbers are flattened to dotted names; the rest is ignored.
- Held-out gates and the lineage card: the run's trials in the lineage store (runs/lineage.db).
- Which curves share a chart (services.dashboard.charts: by meaning and unit), for the steps and for the gates.

Files are re-read only when their modification time changes, so polling a long run stays cheap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fieldkit.lineage import LineageError, LineageStore
from fieldkit.runs import RunDir
from services.dashboard.charts import chart_groups, gate_chart_groups

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # RunConfig.run_name's pattern: no path tricks


class UnknownRunError(LookupError):
    """No run of that name under the runs directory."""


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


class RunReader:
    def __init__(self, runs_dir: Path, lineage_db: Path) -> None:
        self.runs_dir = runs_dir
        self.lineage_db = lineage_db
        self._metrics: dict[Path, tuple[float, dict[str, float]]] = {}  # path -> (mtime, flattened metrics)

    def runs(self) -> list[dict[str, Any]]:
        """Runs with steps on disk or trials in the lineage store, the most recently active first."""
        found: dict[str, float] = {}
        if self.runs_dir.is_dir():
            for steps in self.runs_dir.glob("*/steps"):
                if RUN_NAME.match(steps.parent.name):
                    found[steps.parent.name] = steps.stat().st_mtime
        for run in self._store_runs():
            found.setdefault(run, 0.0)
        return [{"name": n, "updated": t} for n, t in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))]

    def run(self, name: str) -> dict[str, Any]:
        if not RUN_NAME.match(name) or name not in {r["name"] for r in self.runs()}:
            raise UnknownRunError(f"no run {name!r} under {self.runs_dir} or in {self.lineage_db}")
        trials, error = [], None
        try:
            trials = LineageStore(self.lineage_db).trials(name) if self.lineage_db.exists() else []
        except LineageError as exc:  # not a lineage store, or a newer schema: show the curves anyway
            error = str(exc)
        gates = [
            {
                "step": t.step,
                "trial_id": t.trial_id,
                "status": t.status,
                "metric_name": t.metric_name,
                "metric": t.metric,
                "metrics": flatten(t.metrics),
            }
            for t in trials
            if t.kind == "validation-gate"
        ]
        card = LineageStore(self.lineage_db).card(name) if trials else ""
        steps = self._steps(name)
        charts = chart_groups(metric for step in steps for metric in step["metrics"])
        gate_charts = gate_chart_groups(metric for g in gates for metric in g["metrics"])
        return {"name": name, "steps": steps, "charts": charts, "gates": gates, "gate_charts": gate_charts,
                "card": card, "error": error}  # fmt: skip

    def _steps(self, name: str) -> list[dict[str, Any]]:
        run = RunDir(self.runs_dir / name)
        steps = []
        for path in sorted((run.root / "steps").glob("*/metrics.json")):
            if not path.parent.name.isdigit():
                continue
            metrics = self._read(path)
            if metrics is not None:
                steps.append({"step": int(path.parent.name), "metrics": metrics})
        return steps

    def _read(self, path: Path) -> dict[str, float] | None:
        try:
            mtime = path.stat().st_mtime
            cached = self._metrics.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, flatten(json.loads(path.read_text())))
                self._metrics[path] = cached
            return cached[1]
        except (OSError, ValueError, AttributeError):
            return None  # removed between listing and reading, or not a JSON object: skip this step

    def _store_runs(self) -> list[str]:
        if not self.lineage_db.exists():
            return []
        try:
            return LineageStore(self.lineage_db).runs()
        except LineageError:
            return []  # `run()` reports the store's problem with the run it is asked for
