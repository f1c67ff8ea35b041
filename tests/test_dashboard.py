"""The mesh dashboard in headless Chromium while a run goes: real actors on a real Ray cluster (a policy server on
the hf engine answering requests, a sandbox pool with a lease out), step metrics written by the run-directory
writers and trials in a real lineage store, appearing while the page is open. A screenshot is saved in the test's
tmp dir."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, prometheus_names
from test_grafana import dashboard_metrics

from fieldkit.config import RunConfig, SandboxConfig
from fieldkit.generation import GenerateRequest
from fieldkit.lineage import LineageStore, Trial
from fieldkit.runs import RunDir, atomic_write_json

pytestmark = [pytest.mark.ray, pytest.mark.browser]

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN = "grpo-live"
GAUGE_WAIT_MS = 90_000  # Ray exports gauges about every 10 s; a loaded 2-core box can take several periods


@pytest.fixture(scope="module")
def mesh(tiny_model_dir: Path):
    import ray

    from services.policy import start_policy_server
    from services.sandbox_pool import start_pools

    context = ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_port=free_port())
    config = RunConfig.model_validate(
        {"model": {"engine": "hf", "max_model_len": 512}, "paths": {"models_dir": str(REPO / "runs" / "models")}}
    )
    policy = start_policy_server(config)
    pools = start_pools(SandboxConfig(backend="local", pool_size=2))
    try:
        yield {"ray_url": f"http://{context.dashboard_url}", "policy": policy, "pool": next(iter(pools.values()))}
    finally:
        ray.get(policy.shutdown.remote())
        ray.shutdown()


def write_step(run: RunDir, step: int) -> None:
    """What the driver writes after each learner step (services/train.py), with made-up but plausible values."""
    atomic_write_json(
        run.step_metrics(step),
        {
            "train.reward": 0.1 * step,
            "train.task_complete": 0.2 * step,
            "train.per_assertion": 0.3 + 0.05 * step,
            "train.mean_turns": 6.0 - step,
            "learner.kl": 0.002 * step,
            "wall.rollout_s": 20.0,
            "wall.train_s": 4.0 + step,
        },
    )


def gate(step: int, per_assertion: float, status: str) -> Trial:
    return Trial(
        trial_id=f"{RUN}/gate-{step:04d}",
        run_id=RUN,
        kind="validation-gate",
        status=status,
        step=step,
        metric_name="validation.per_assertion",
        metric=per_assertion,
        metrics={"validation.per_assertion": per_assertion, "validation.task_pass": per_assertion / 3},
        hypothesis="GRPO on the tiny model learns to stop",
    )


def test_page_shows_the_mesh_and_training_as_the_run_goes(mesh, tmp_path: Path) -> None:
    import ray
    from playwright.sync_api import sync_playwright

    from fieldkit.gym.records import WorkspaceSeed
    from services.dashboard import DashboardServer, DashboardSettings

    runs_dir, db = tmp_path / "runs", tmp_path / "lineage.db"
    run = RunDir(runs_dir / RUN)
    store = LineageStore(db)
    store.record_trial(gate(0, 0.30, "baseline"))
    write_step(run, 1)
    lease = ray.get(mesh["pool"].lease.remote(WorkspaceSeed()))
    ray.get(mesh["pool"].exec.remote(lease, "true", 5.0))  # one command: the pool's latency histogram is exported
    stop = threading.Event()

    def keep_the_engine_busy() -> None:
        request = GenerateRequest(messages=[{"role": "user", "content": "ls"}], max_tokens=16)
        while not stop.is_set():
            ray.get(mesh["policy"].generate.remote(request))

    load = threading.Thread(target=keep_the_engine_busy, daemon=True)
    load.start()
    server = DashboardServer(DashboardSettings(runs_dir, db, mesh["ray_url"], refresh_s=1.0), port=free_port())
    url = server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(url)
            page.wait_for_selector('#actors tr[data-class="PolicyServer"][data-state="ALIVE"]', timeout=60_000)
            page.wait_for_selector('#actors tr[data-class="SandboxPool"][data-state="ALIVE"]')
            page.wait_for_function("document.querySelectorAll('#curves circle.pt').length > 0", timeout=30_000)
            first_points = page.locator("#curves circle.pt").count()
            assert page.locator("#run-select").input_value() == RUN
            assert page.get_attribute("#ray-link", "href") == mesh["ray_url"]

            # The run goes on while the page is open: two more steps and a validation gate.
            write_step(run, 2)
            store.record_trial(gate(2, 0.42, "keep"))
            write_step(run, 3)
            page.wait_for_function(
                f"document.querySelectorAll('#curves circle.pt').length > {first_points}", timeout=30_000
            )
            page.wait_for_selector("#gates svg circle.pt", timeout=30_000)
            page.wait_for_function("document.getElementById('card').textContent.includes('gate-0002')")
            page.wait_for_function(
                "Number(document.getElementById('engine-tps').textContent) > 0", timeout=GAUGE_WAIT_MS
            )
            page.wait_for_function(
                "document.getElementById('pools').textContent.includes('1 leased')", timeout=GAUGE_WAIT_MS
            )
            policy_row = page.locator('#actors tr[data-class="PolicyServer"]')
            assert policy_row.locator("svg.busy polyline").count() == 1  # busy fraction drawn over time
            assert "%" in policy_row.inner_text()
            rates = page.locator('#curves .chart[data-group="rewards and rates"]')  # grouped by meaning and unit
            assert rates.locator('circle.pt[data-series="train.reward"]').count() == 3
            assert rates.locator('circle.pt[data-series="learner.kl"]').count() == 0
            assert "(reward, fraction)" in rates.locator("h3").inner_text()
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            browser.close()
        # the Grafana dashboard's sandbox pool metrics, its command latency histogram included, are what this pool
        # exports (the rest: tests/test_train_e2e.py, where a run's episodes write no command to time)
        wanted = {n for n in dashboard_metrics() if n.startswith("ray_fieldkit_sandbox_")}
        deadline = time.monotonic() + GAUGE_WAIT_MS / 1000
        while missing := wanted - prometheus_names(mesh["ray_url"]):
            assert time.monotonic() < deadline, f"not exported: {sorted(missing)}"
            time.sleep(2)
    finally:
        stop.set()
        load.join(timeout=60)
        server.stop()
        ray.get(mesh["pool"].release.remote(lease))
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
