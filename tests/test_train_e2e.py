"""The mesh end to end through real actors: vLLM CPU engine, sandbox pool, grader, learner, lineage.

One driver is killed (SIGKILL) in the middle of its second step and resumed: the run must finish with every step
exactly once, the adapter version advancing with each step and served by the policy server, and match a run of
the same seed that nobody killed, step by step. Another run goes through `fieldkit train --address` (the Job SDK)
to a `ray start --head` cluster, followed by README's `ray job submit` line, stopped with `fieldkit train --stop`;
a pipelined one (`fieldkit train` in-process) overlaps each step's rollouts with the step before it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import prometheus_names, submit_job, write_run_config
from test_grafana import dashboard_metrics

from fieldkit.lineage import LineageStore
from fieldkit.runs import RunDir, read_episodes
from services.cluster import client_env

pytestmark = [pytest.mark.engine, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


def driver(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The driver as a user starts it; output to a file (a pipe nobody reads would fill and block it)."""
    env = {**os.environ, "RAY_ADDRESS": ""}  # each driver starts its own local cluster
    command = [sys.executable, "-m", "services.train", "--config", str(config), *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_driver_killed_mid_step_resumes_to_the_same_run_as_an_uninterrupted_one(tiny_model_dir, tmp_path: Path) -> None:
    config = write_run_config(tmp_path, "resume", max_steps=2)
    straight = driver(write_run_config(tmp_path, "straight", max_steps=2), tmp_path / "straight.log")  # same seed
    run = RunDir(tmp_path / "runs" / "resume")
    first = driver(config, tmp_path / "first.log")
    deadline = time.monotonic() + 900
    while not run.step_episodes(2).exists():  # step 2's rollouts are on disk: the learner is on its batch
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no episodes of step 2 within 15 minutes"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads(run.latest.read_text())["step"] == 1  # killed inside step 2, before its checkpoint
    written = {step: run.step_episodes(step).read_bytes() for step in (1, 2)}

    second = driver(config, tmp_path / "second.log", "--resume")
    second.wait(timeout=900)
    output = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, output[-3000:]
    assert "resumed resume after step 1" in output and "finished 2 steps" in output
    straight.wait(timeout=900)
    assert straight.returncode == 0, (tmp_path / "straight.log").read_text()[-3000:]

    for step in (1, 2):
        assert run.step_episodes(step).read_bytes() == written[step]  # not rolled out again
        episodes = read_episodes(run.step_episodes(step))
        assert len(episodes) == 4 and len({e.episode_id for e in episodes}) == 4
        assert all(e.grade is not None and e.reward is not None for e in episodes if e.stop_reason != "failed")
        assert {e.policy_version for e in episodes} == {step - 1}  # rolled out by the previous step's adapter
        metrics = json.loads(run.step_metrics(step).read_text())
        assert metrics["policy.published_version"] == metrics["policy.served_version"] == step
        # the same episodes of the same tasks in the same groups as the run nobody killed (the sampled tokens may
        # differ: the engine's batches, hence its float sums, are not the same in two runs)
        uninterrupted = read_episodes(RunDir(tmp_path / "runs" / "straight").step_episodes(step))
        assert [(e.episode_id, e.task_id, e.group_id) for e in episodes] == [
            (e.episode_id, e.task_id, e.group_id) for e in uninterrupted
        ]
    store = LineageStore(tmp_path / "runs" / "lineage.db")

    def shape(run_name: str) -> list[tuple[str, str, str | None, int]]:
        strip = len(run_name) + 1
        return [
            (t.trial_id[strip:], t.kind, t.parent_id[strip:] if t.parent_id else None, t.step)
            for t in store.trials(run_name)
        ]

    assert shape("resume") == shape("straight")
    assert [name for name, *_ in shape("resume")] == ["gate-0000", "step-0001", "step-0002", "gate-0002"]
    assert (run.best / "adapter_config.json").exists() and (run.best / "adapter_ref.json").exists()


def tensorboard_scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar, read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def fieldkit_train(*args: str, home: Path) -> subprocess.Popen[bytes]:
    """`fieldkit train ...` from the repository root, as a user runs it, with `home` as FIELDKIT_HOME; its output
    (stdout and stderr) to home/<n>.log (a pipe nobody reads while it runs would fill and block it)."""
    env = {**client_env(), "FIELDKIT_HOME": str(home), "RAY_ADDRESS": ""}
    command = [sys.executable, "-m", "fieldkit.cli", "train", *args]
    log = home / f"fieldkit-train-{len(list(home.glob('fieldkit-train-*.log')))}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    process.log = log  # type: ignore[attr-defined]
    return process


def finished(process: subprocess.Popen[bytes], timeout: float = 900) -> tuple[int, str]:
    """(exit code, output) once it ends."""
    process.wait(timeout=timeout)
    return process.returncode, process.log.read_text()  # type: ignore[attr-defined]


def test_fieldkit_train_address_submits_through_the_job_sdk_and_follows_the_log(
    tiny_model_dir, tmp_path: Path, head_cluster: str
) -> None:
    """The run's paths are relative: they must land under FIELDKIT_HOME, not in Ray's copy of the working dir."""
    config = write_run_config(tmp_path, "job", max_steps=1, relative=True)
    trackers = "logging.trackers=[tensorboard, mlflow]"
    following = fieldkit_train("--config", str(config), "--address", head_cluster, "--set", trackers, home=tmp_path)
    exported: set[str] = set()
    while following.poll() is None:  # meanwhile: what the actors export to Prometheus, for the Grafana dashboard
        exported |= prometheus_names(head_cluster)
        time.sleep(2)
    code, out = finished(following)
    assert code == 0, out[-3000:]
    # every metric deploy/grafana's dashboard names is exported, but the sandbox command histogram: the tiny random
    # model writes no command, so no episode runs one (tests/test_dashboard.py sees it exported)
    assert dashboard_metrics() - exported <= {f"ray_fieldkit_sandbox_exec_latency_s_{p}" for p in ("bucket", "count")}
    job_id = next(w for w in out.split() if w.startswith("fieldkit-job-"))
    # the job's log, followed: where the logs went (under the home), a line per step, no engine dump, the end
    log_dir = tmp_path / "runs" / "job" / "logs"
    assert f"logs (Ray, vLLM, the actors): {log_dir}/" in out
    assert "step 1/1:" in out and "job: finished 1 steps" in out and f"job {job_id}: SUCCEEDED" in out
    # vLLM's weight-loading progress, printed by the engine process: in the policy server's log, not on the console
    # (vLLM's own INFO log lines were missing from that log in two full-suite runs, present when run alone)
    loading = "Loading safetensors checkpoint shards"
    assert loading not in out and "Initializing a V1 LLM engine" not in out
    assert loading in "".join(log.read_text() for log in log_dir.glob("policy-*.log"))
    from ray.job_submission import JobSubmissionClient

    from services.jobs import auth_headers

    info = JobSubmissionClient(head_cluster, headers=auth_headers()).get_job_info(job_id)
    assert info.entrypoint.startswith(f"{sys.executable} -u -m services.train --config ")  # this venv's Python
    assert info.metadata["fieldkit.run"] == "job"
    trials = LineageStore(tmp_path / "runs" / "lineage.db").trials("job")
    assert [t.trial_id for t in trials] == ["job/gate-0000", "job/step-0001", "job/gate-0001"]
    reward = next(t for t in trials if t.kind == "rl-step").metrics["train.reward"]
    assert tensorboard_scalars(tmp_path / "runs" / "job" / "tensorboard", "train/reward") == [
        (1, pytest.approx(reward))
    ]
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("fieldkit").experiment_id])
    assert [(m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, "train.reward")] == [
        (1, pytest.approx(reward))
    ]

    # README's own line (`ray job submit ... -- python -m services.train`): the cluster's python starts the driver;
    # then `fieldkit train --stop` stops the job by its id
    raw = write_run_config(tmp_path, "raw", max_steps=3)
    entrypoint = ["python", "-m", "services.train", "--config", str(raw)]
    submitted = submit_job(head_cluster, REPO, entrypoint, timeout=120, options=("--no-wait",))
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    raw_id = next(w.strip("'") for w in submitted.stdout.split() if w.strip("'").startswith("raysubmit_"))
    ray_cli, address = str(Path(sys.executable).parent / "ray"), ["--address", head_cluster]
    deadline = time.monotonic() + 300
    while "logs (Ray, vLLM, the actors)" not in (logs := job_cli(ray_cli, "logs", address, raw_id)):
        assert "failed" not in job_cli(ray_cli, "status", address, raw_id).lower(), logs[-3000:]
        assert time.monotonic() < deadline, logs[-3000:]
        time.sleep(1)
    code, stopped = finished(fieldkit_train("--stop", raw_id, "--address", head_cluster, home=tmp_path), timeout=60)
    assert code == 0 and f"stopping {raw_id}" in stopped, stopped
    while "stopped" not in job_cli(ray_cli, "status", address, raw_id).lower():
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(1)
    code, again = finished(fieldkit_train("--stop", "raw", "--address", head_cluster, home=tmp_path), timeout=60)
    assert code == 1 and "no pending or running job of run 'raw'" in again


def job_cli(ray_cli: str, what: str, address: list[str], job_id: str) -> str:
    return subprocess.run(
        [ray_cli, "job", what, *address, job_id], env=client_env(), capture_output=True, text=True
    ).stdout


def test_pipelined_run_rolls_out_the_next_step_while_the_learner_trains(tiny_model_dir, tmp_path: Path) -> None:
    # `fieldkit train` in-process, the pipelining set from the command line (keep_last 2: the fewest pipelining
    # allows, step n+1's rollouts still use v(n-1)), the paths relative to the project home
    config = write_run_config(tmp_path, "pipelined", max_steps=3, relative=True)
    sets = ["rollout.max_staleness=1", "eval.every_n_steps=3", "checkpoint.keep_last=2"]
    code, output = finished(fieldkit_train("--config", str(config), *[f"--set={s}" for s in sets], home=tmp_path))
    assert code == 0 and "finished 3 steps" in output, output[-3000:]
    run = RunDir(tmp_path / "runs" / "pipelined")
    assert yaml.safe_load((run.root / "config.yaml").read_text())["rollout"]["max_staleness"] == 1
    rewards = tensorboard_scalars(run.root / "tensorboard", "train/reward")  # the default tracker, every step once
    assert [step for step, _ in rewards] == [1, 2, 3]
    assert [s for s, _ in tensorboard_scalars(run.root / "tensorboard", "validation/reward")] == [0, 3]
    stale = []
    for step in (1, 2, 3):
        episodes = read_episodes(run.step_episodes(step))
        expected = [f"s{step:04d}-t{t:03d}-k{k}" for t in range(2) for k in range(2)]
        assert sorted(e.episode_id for e in episodes) == expected
        assert all(e.grade is not None for e in episodes if e.stop_reason != "failed")
        metrics = json.loads(run.step_metrics(step).read_text())
        assert metrics["policy.published_version"] == metrics["policy.served_version"] == step
        stale.append(metrics["rollout.stale_turn_share"])
        # step 1 starts after v0 is published; steps 2 and 3 start while the step before trains, on its adapter
        assert {turn.policy_version for e in episodes for turn in e.turns} == {max(step - 2, 0)}
    assert stale == [0.0, 1.0, 1.0]
    # retention: checkpoints 2 and 3 (and the best gate's, 0 or 3), the adapters they serve, none other
    best = json.loads(run.checkpoint(3).joinpath("state.json").read_text())["best_step"]
    assert [step for step, _ in run.checkpoints()] == sorted({3, 2, best}, reverse=True)
    assert sorted(p.name for p in run.adapters.iterdir()) == sorted({f"pipelined-v{v}" for v in (2, 3, best)})
