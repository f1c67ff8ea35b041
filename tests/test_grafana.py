"""deploy/grafana/fieldkit-mesh.json: a Grafana dashboard that parses, has a panel for each kind of actor, and names
only metrics the actors declare (under the names Ray exports them by). That the actors really export every one of
them is checked against a live cluster's Prometheus endpoints while a run goes, in
tests/test_train_e2e.py::test_fieldkit_train_address_submits_through_the_job_sdk_and_follows_the_log."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "fieldkit-mesh.json"
DECLARED = re.compile(r"\b(Gauge|Counter|Histogram)\(\s*f?\"(fieldkit_[\w{}]+)\"")


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """The Prometheus metric names the dashboard's queries name."""
    exprs = [t["expr"] for panel in json.loads(path.read_text())["panels"] for t in panel.get("targets", [])]
    return {name for expr in exprs for name in re.findall(r"\bray_fieldkit_\w+", expr)}


def declared_metrics() -> set[str]:
    """What the actors declare with ray.util.metrics, as Ray exports it: a `ray_` prefix, `_total` after a counter,
    `_bucket`/`_count`/`_sum` after a histogram. The learner's gauges are named by a loop over its figures."""
    from services.learner import GAUGED_FIGURES

    names: set[str] = set()
    for path in (REPO / "services").rglob("*.py"):
        for kind, name in DECLARED.findall(path.read_text()):
            expanded = (
                [f"fieldkit_learner_{figure}" for figure in GAUGED_FIGURES]
                if name == "fieldkit_learner_{name}"
                else [name]
            )
            for one in expanded:
                if kind == "Counter":
                    names.add(f"ray_{one}" if one.endswith("_total") else f"ray_{one}_total")
                elif kind == "Histogram":
                    names |= {f"ray_{one}_{part}" for part in ("bucket", "count", "sum")}
                else:
                    names.add(f"ray_{one}")
    return names


def test_dashboard_parses_and_covers_every_kind_of_actor() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "fieldkit-mesh" and board["templating"]["list"][0]["type"] == "datasource"
    panels = [p for p in board["panels"] if p["type"] == "timeseries"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    named = dashboard_metrics()
    for kind in ("policy", "sandbox", "rollout", "learner"):
        assert any(name.startswith(f"ray_fieldkit_{kind}_") for name in named), kind
    assert all('SessionName=~"$session"' in t["expr"] for p in panels for t in p["targets"])


def test_dashboard_names_only_metrics_the_actors_declare() -> None:
    declared = declared_metrics()
    assert "ray_fieldkit_policy_tokens_per_s" in declared and "ray_fieldkit_rollout_episodes_total" in declared
    assert dashboard_metrics() - declared == set()
