"""The dashboard's readers without a cluster: Prometheus samples, actor and node rows, engine and pool summaries,
run directories and the lineage store, the JSON API over real files, and what it says when Ray is not there."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import free_port
from fastapi.testclient import TestClient

from fieldkit.lineage import LineageStore, Trial
from fieldkit.runs import RunDir, atomic_write_json
from services.dashboard import DashboardSettings, create_app
from services.dashboard.ray_source import actor_row, node_row, order_actors, parse_samples, summarise
from services.dashboard.run_source import RunReader, flatten

SESSION = "session_2026_a"
EXPOSITION = f"""# HELP ray_fieldkit_policy_tokens_per_s generated tokens per second
# TYPE ray_fieldkit_policy_tokens_per_s gauge
ray_fieldkit_policy_tokens_per_s{{Component="core_worker",SessionName="{SESSION}",WorkerId="w1"}} 120.5
ray_fieldkit_policy_requests_in_flight{{SessionName="{SESSION}",WorkerId="w1"}} 3.0
ray_fieldkit_policy_busy_fraction{{SessionName="{SESSION}",WorkerId="w1"}} 0.75
ray_fieldkit_policy_adapter_version{{SessionName="{SESSION}",WorkerId="w1",adapter="agent"}} 4.0
ray_fieldkit_sandbox_leased{{SessionName="{SESSION}",WorkerId="w2",backend="bwrap",node="abc"}} 3.0
ray_fieldkit_sandbox_idle{{SessionName="{SESSION}",WorkerId="w2",backend="bwrap",node="abc"}} 1.0
ray_fieldkit_policy_tokens_per_s{{SessionName="session_other",WorkerId="w9"}} 999.0
ray_fieldkit_policy_tokens_per_s{{SessionName="{SESSION}",WorkerId="w_dead"}} 50.0
ray_tasks{{SessionName="{SESSION}",State="RUNNING"}} 2.0
"""


def actor(actor_id: str, cls: str, worker: str, state: str = "ALIVE", cpu: float | None = 40.0, start: int = 1) -> dict:
    return {
        "actorId": actor_id,
        "actorClass": cls,
        "name": "",
        "state": state,
        "address": {"nodeId": "n1", "ipAddress": "10.0.0.1", "workerId": worker},
        "pid": 100,
        "numRestarts": "0",
        "requiredResources": {"CPU": 1.0, "GPU": 0.5},
        "processStats": None if cpu is None else {"cpuPercent": cpu, "memoryInfo": {"rss": 2**30}, "gpuMemoryUsage": 0},
        "startTime": start,
        "exitDetail": "killed by ray.kill" if state == "DEAD" else "-",
    }


def test_samples_are_fieldkit_gauges_of_this_session_only() -> None:
    samples = parse_samples(EXPOSITION, SESSION)
    assert {s.name for s in samples} == {
        "fieldkit_policy_tokens_per_s",
        "fieldkit_policy_requests_in_flight",
        "fieldkit_policy_busy_fraction",
        "fieldkit_policy_adapter_version",
        "fieldkit_sandbox_leased",
        "fieldkit_sandbox_idle",
    }
    assert all(s.labels["SessionName"] == SESSION for s in samples)
    assert next(s for s in samples if s.labels.get("adapter") == "agent").value == 4.0


def test_actor_rows_take_busy_from_a_gauge_else_from_cpu() -> None:
    samples = parse_samples(EXPOSITION, SESSION)
    policy = actor_row(actor("a1", "PolicyServer", "w1"), samples)
    assert (policy["busy"], policy["busy_source"]) == (0.75, "gauge")
    assert policy["gauges"]["fieldkit_policy_tokens_per_s"] == 120.5
    assert policy["required"] == {"CPU": 1.0, "GPU": 0.5} and policy["rss_bytes"] == 2**30
    worker = actor_row(actor("a2", "RolloutWorker", "w3", cpu=250.0), samples)
    assert (worker["busy"], worker["busy_source"]) == (1.0, "cpu")
    dead = actor_row(actor("a3", "PolicyServer", "w_dead", state="DEAD"), samples)
    assert dead["busy"] is None and dead["gauges"] == {} and dead["death"] == "killed by ray.kill"
    unreported = actor_row(actor("a4", "Grader", "w4", cpu=None), samples)
    assert unreported["busy"] is None and unreported["cpu_percent"] is None


def test_summary_counts_live_actors_only_and_orders_live_first() -> None:
    samples = parse_samples(EXPOSITION, SESSION)
    rows = [
        actor_row(actor("d1", "PolicyServer", "w_dead", state="DEAD", start=5), samples),
        actor_row(actor("a1", "PolicyServer", "w1"), samples),
        actor_row(actor("a2", "SandboxPool", "w2"), samples),
    ]
    summary = summarise(rows, samples)
    assert summary["engine"] == {
        "requests_in_flight": 3.0,
        "tokens_per_s": 120.5,
        "adapters": {"agent": 4},
        "vllm": None,
    }
    assert summary["pools"] == [{"pool": "abc/bwrap", "leased": 3.0, "idle": 1.0}]
    assert [r["actor_id"] for r in order_actors(rows)] == ["a1", "a2", "d1"]
    assert summarise([], [])["engine"]["tokens_per_s"] is None


VLLM = """ray_vllm_num_requests_running{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} 5.0
ray_vllm_num_requests_waiting{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} 2.0
ray_vllm_kv_cache_usage_perc{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} 0.25
ray_vllm_generation_tokens_total{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} {tokens}
ray_vllm_time_to_first_token_seconds_sum{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} {ttft_sum}
ray_vllm_time_to_first_token_seconds_count{{SessionName="{s}",WorkerId="w1",model_name="tiny"}} {ttft_count}
"""


def test_a_vllm_engine_is_shown_with_vllms_own_metrics() -> None:
    from services.dashboard.ray_source import EngineCounters

    now = [100.0]
    counters = EngineCounters(clock=lambda: now[0])
    rows = [actor_row(actor("a1", "PolicyServer", "w1"), [])]

    def engine(tokens: float, ttft_sum: float, ttft_count: float) -> dict:
        text = VLLM.format(s=SESSION, tokens=tokens, ttft_sum=ttft_sum, ttft_count=ttft_count)
        return summarise(rows, parse_samples(text, SESSION), counters)["engine"]

    first = engine(1000, 2.0, 10)
    assert first["requests_in_flight"] == 7.0 and first["tokens_per_s"] is None  # a rate needs two exports
    assert first["vllm"]["kv_cache_usage"] == 0.25
    now[0] = 102.0
    assert engine(1000, 2.0, 10)["tokens_per_s"] is None  # the same export, polled again
    now[0] = 110.0
    later = engine(1500, 3.0, 20)
    assert later["tokens_per_s"] == 50.0 and later["vllm"]["ttft_s"] == 0.1  # 500 tokens, 10 first tokens, in 10 s
    now[0] = 120.0
    assert engine(10, 0.1, 1)["tokens_per_s"] == 50.0  # an engine that restarted keeps the last figures once


def test_node_rows() -> None:
    summary = {
        "hostname": "box",
        "ip": "10.0.0.1",
        "cpu": 37.5,
        "mem": [64 * 2**30, 48 * 2**30, 25.0, 16 * 2**30],
        "gpus": [{"name": "H100", "utilizationGpu": 80, "memoryUsed": 40000, "memoryTotal": 81559}],
        "raylet": {"nodeId": "n1", "state": "ALIVE"},
    }
    row = node_row(summary, {"n1": "3.0/16.0 CPU\n0.5/1.0 GPU"})
    assert row["mem_used"] == 16 * 2**30 and row["gpus"][0]["utilization"] == 80
    assert row["resources"] == "3.0/16.0 CPU\n0.5/1.0 GPU" and row["state"] == "ALIVE"


def test_flatten_keeps_numbers_under_dotted_names() -> None:
    nested = {"train": {"reward": 0.5, "done": True, "note": "x"}, "kl": 1, "wall": {"split": {"rollout_s": 2.5}}}
    assert flatten(nested) == {"train.reward": 0.5, "kl": 1.0, "wall.split.rollout_s": 2.5}


def trial(run: str, name: str, kind: str, status: str, step: int, metric: float) -> Trial:
    return Trial(
        trial_id=f"{run}/{name}",
        run_id=run,
        kind=kind,
        status=status,
        step=step,
        metric_name="validation.per_assertion" if kind == "validation-gate" else "train.reward",
        metric=metric,
        metrics={"validation.per_assertion": metric} if kind == "validation-gate" else {"train.reward": metric},
    )


def test_run_reader_over_real_files_and_store(tmp_path: Path) -> None:
    runs_dir, db = tmp_path / "runs", tmp_path / "lineage.db"
    run = RunDir(runs_dir / "grpo-a")
    atomic_write_json(run.step_metrics(2), {"train.reward": 0.2, "learner": {"kl": 0.01}})
    atomic_write_json(run.step_metrics(1), {"train.reward": 0.1})
    (run.root / "steps" / "000003").mkdir()  # a step whose metrics are not written yet
    store = LineageStore(db)
    store.record_trial(trial("grpo-a", "gate-0000", "validation-gate", "baseline", 0, 0.3))
    store.record_trial(trial("grpo-a", "step-0001", "rl-step", "keep", 1, 0.1))
    store.record_trial(trial("sft-only", "sft", "sft", "keep", 0, 0.0))
    reader = RunReader(runs_dir, db)
    assert [r["name"] for r in reader.runs()] == ["grpo-a", "sft-only"]
    found = reader.run("grpo-a")
    assert [(s["step"], s["metrics"]) for s in found["steps"]] == [
        (1, {"train.reward": 0.1}),
        (2, {"train.reward": 0.2, "learner.kl": 0.01}),
    ]
    assert [(g["step"], g["status"], g["metric"]) for g in found["gates"]] == [(0, "baseline", 0.3)]
    assert [(c["title"], c["metrics"]) for c in found["charts"]] == [
        ("rewards and rates", ["train.reward"]),
        ("KL", ["learner.kl"]),
    ]
    assert "grpo-a/gate-0000" in found["card"] and found["error"] is None
    atomic_write_json(run.step_metrics(1), {"train.reward": 0.15})  # rewritten: the cache notices
    assert reader.run("grpo-a")["steps"][0]["metrics"] == {"train.reward": 0.15}
    assert reader.run("sft-only")["steps"] == []


def test_api_over_real_files_and_an_absent_ray(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    atomic_write_json(RunDir(runs_dir / "r1").step_metrics(1), {"train.reward": 0.5})
    (tmp_path / "lineage.db").write_text("not sqlite")
    ray_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = TestClient(create_app(DashboardSettings(runs_dir, tmp_path / "lineage.db", ray_url)))
    page = client.get("/")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert client.get("/static/dashboard.js").status_code == 200
    cluster = client.get("/api/cluster").json()
    assert cluster["ok"] is False and ray_url in cluster["error"] and cluster["actors"] == []
    assert cluster["ray_dashboard_url"] == ray_url
    assert [r["name"] for r in client.get("/api/runs").json()] == ["r1"]
    run = client.get("/api/runs/r1").json()
    assert run["steps"][0]["metrics"] == {"train.reward": 0.5}
    assert "lineage.db" in run["error"]  # the store is unreadable; the curves still show
    for bad in ("nope", "..", "%2e%2e%2fetc"):
        assert client.get(f"/api/runs/{bad}").status_code == 404
    assert json.loads(client.get("/api/runs/nope").text)["detail"].startswith("no run 'nope'")


# the names of a real step's metrics.json (services/train.py and the learner) and a gate's
STEP_METRICS = """learner.assistant_tokens learner.clip_fraction learner.entropy learner.grad_norm
learner.is_masked_frac
learner.kl learner.loss learner.micro_batches learner.mismatch_kl learner.policy_loss learner.ratio_max
learner.ratio_mean learner.ratio_min learner.sequences learner.step_s learner.tokens learner.tokens_per_s
learner.weight_delta_l2 learner.weight_delta_max policy.published_version policy.served_version
rollout.stale_turn_share rollout.template_mismatches train.failed train.groups train.mean_turns train.mean_wall_s
train.n_episodes train.n_tasks train.per_assertion train.per_assertion_net train.reward train.task_complete
train.task_pass train.zero_signal_groups wall.publish_s wall.rollout_s wall.step_s wall.train_s""".split()
GATE_METRICS = """validation.reward validation.task_pass validation.task_complete validation.per_assertion
validation.per_assertion_net validation.mean_turns validation.failed validation.n_episodes validation.mean_wall_s
""".split()


def test_charts_group_metrics_by_meaning_and_unit_not_by_prefix() -> None:
    from services.dashboard.charts import chart_groups, gate_chart_groups

    charts = {c["title"]: c for c in chart_groups([*STEP_METRICS, "learner.new_figure"])}
    placed = [name for chart in charts.values() for name in chart["metrics"]]
    assert sorted(placed) == sorted([*STEP_METRICS, "learner.new_figure"])  # each metric exactly once
    where = {name: title for title, chart in charts.items() for name in chart["metrics"]}
    assert where["learner.assistant_tokens"] != where["learner.clip_fraction"]  # 430 tokens never beside 0.0
    assert where["learner.kl"] != where["learner.entropy"] != where["learner.ratio_mean"]
    assert charts["rewards and rates"]["metrics"] == [
        "train.per_assertion", "train.per_assertion_net", "train.reward", "train.task_complete", "train.task_pass",
    ]  # fmt: skip
    assert where["learner.tokens_per_s"] == "throughput" and charts["throughput"]["unit"] == "tokens/s"
    assert {where[n] for n in ("wall.step_s", "learner.step_s", "train.mean_wall_s")} == {"time"}
    assert where["learner.loss"] == where["learner.policy_loss"] == "losses"
    assert charts["learner.new_figure"] == {
        "title": "learner.new_figure",
        "unit": "",
        "metrics": ["learner.new_figure"],
    }
    assert all(c["unit"] for title, c in charts.items() if title != "learner.new_figure")
    gates = gate_chart_groups(GATE_METRICS)
    assert [(c["title"], len(c["metrics"])) for c in gates] == [("rewards and rates", 5), ("turns per episode", 1)]
