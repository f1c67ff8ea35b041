"""Multi-node through storage (issue 18): a three-node Ray cluster on this machine (a head for the driver, node A
for the learner, node B for the policy server and the rollout workers; `resources.placement` pins them), each node
with its own scratch directory as its node cache, and an S3 server (moto) on 127.0.0.1 as `paths.storage` and as
the home of the model (`model.name_or_path: s3://...`, copied into each node's cache once).

A 3-step run is killed (SIGKILL) after its first checkpoint and resumed: it must finish, every adapter version must
be served with its probe passed, the checkpoints and adapters must be in the object store, and no process of one
node may open or list a path under another node's scratch directory (an audit hook loaded into every Python process
of the cluster records what each one touched there: tests/audit_site/sitecustomize.py).

Then the endpoint serves what the run produced, from storage alone: `<run>/best` by its URI on the run's base model
(the run's config.yaml, read from the object store), and a version published over POST /v1/adapters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_run_config
from s3_server import BUCKET, client_env, s3_server

from fieldkit.runs import RunDir, RunStore
from fieldkit.storage import Storage

pytestmark = [pytest.mark.engine, pytest.mark.ray, pytest.mark.sandbox, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NODES = ("head", "a", "b")  # the driver's, the learner's, the policy server's and rollout workers'


def node_env(name: str, scratch: dict[str, Path], audit: Path, s3: dict[str, str]) -> dict[str, str]:
    """What a node's processes run with: its own node cache, the object store's credentials, the audit hook."""
    return {
        **s3,
        "FIELDKIT_NODE_CACHE": str(scratch[name]),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "audit_site"), str(REPO)]),
        "FIELDKIT_AUDIT_ROOTS": os.pathsep.join(str(p) for p in scratch.values()),
        "FIELDKIT_AUDIT_LOG": str(audit),
        "FIELDKIT_AUDIT_NODE": name,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[dict]:
    from ray.cluster_utils import Cluster

    tmp = tmp_path_factory.mktemp("multinode")
    scratch = {name: tmp / f"scratch-{name}" for name in NODES}
    audit = tmp / "audit"
    for path in [*scratch.values(), audit]:
        path.mkdir()
    with s3_server() as s3, client_env(s3):
        storage = f"s3://{BUCKET}/store"
        model = tmp / "model-upload"  # put_dir consumes its source
        shutil.copytree(tiny_model_dir, model)
        model_uri = Storage(storage, tmp / "uploader").put_dir(model, "models/tiny")
        envs = {name: node_env(name, scratch, audit, s3) for name in NODES}
        nodes = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 2, "env_vars": envs["head"], "include_dashboard": False}
        )
        try:
            nodes.add_node(num_cpus=2, resources={"node_a": 4}, env_vars=envs["a"])
            nodes.add_node(num_cpus=4, resources={"node_b": 4}, env_vars=envs["b"])
            yield {"address": nodes.address, "tmp": tmp, "scratch": scratch, "audit": audit, "envs": envs,
                   "storage": storage, "model": model_uri}  # fmt: skip
        finally:
            nodes.shutdown()


def driver(cluster: dict, config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **cluster["envs"]["head"], "RAY_ADDRESS": ""}
    command = [sys.executable, "-m", "services.train", "--config", str(config), *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_a_run_on_three_nodes_moves_everything_through_storage_and_resumes_after_the_driver_dies(cluster) -> None:
    tmp = cluster["tmp"]
    config = write_run_config(
        tmp, "multi", max_steps=3,
        model={"name_or_path": cluster["model"], "engine": "hf"},  # starts in seconds: storage is under test here
        paths={"storage": cluster["storage"]},
        resources={"ray_address": cluster["address"],
                   "placement": {"learner": {"node_a": 1}, "policy": {"node_b": 1}, "rollout": {"node_b": 1}}},
        eval={"every_n_steps": 3},
    )  # fmt: skip
    store = RunStore(Storage(cluster["storage"], cluster["scratch"]["head"]), "multi")
    first = driver(cluster, config, tmp / "first.log")
    deadline = time.monotonic() + 600
    while (found := store.latest_checkpoint()) is None or found[0] < 1:  # checkpoint 1 in the object store
        assert first.poll() is None, (tmp / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint 1 within 10 minutes"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_after = store.latest_checkpoint()[0]  # type: ignore[index]
    assert killed_after < 3, "the driver finished before it could be killed"

    second = driver(cluster, config, tmp / "second.log", "--resume")
    second.wait(timeout=600)
    output = (tmp / "second.log").read_text()
    assert second.returncode == 0, output[-3000:]
    assert f"resumed multi after step {killed_after}" in output and "finished 3 steps" in output, output[-3000:]

    run = RunDir(tmp / "runs" / "multi")  # the driver's own records
    for step in (1, 2, 3):  # every version was loaded by the policy server, which refuses one whose probe differs
        metrics = json.loads(run.step_metrics(step).read_text())
        assert metrics["policy.published_version"] == metrics["policy.served_version"] == step
    assert store.checkpoints()[0][0] == 3 and store.storage.exists(f"{store.best}/_complete.json")
    assert not (tmp / "runs" / "multi" / "checkpoints").exists() and not run.adapters.exists()  # all in storage

    # each node read the model and the adapters from its own cache: the policy node downloaded each version
    downloaded = {p.name.split("-", 1)[1] for p in (cluster["scratch"]["b"] / "storage").iterdir()}
    assert {"tiny", "multi-v1", "multi-v2", "multi-v3"} <= downloaded, downloaded
    assert_each_node_kept_to_its_own_scratch(cluster)


def assert_each_node_kept_to_its_own_scratch(cluster: dict) -> None:
    touched: dict[str, set[str]] = {name: set() for name in NODES}
    for log in cluster["audit"].glob("*.log"):
        node = log.name.split("-", 1)[0]
        touched[node] |= {line.split("\t", 1)[1] for line in log.read_text().splitlines()}
    assert touched["a"] and touched["b"], "the audit hook recorded nothing: it did not load in the actors"
    for node, paths in touched.items():
        foreign = [
            p for p in paths for other in NODES if other != node and p.startswith(str(cluster["scratch"][other]))
        ]
        assert not foreign, f"node {node} touched another node's scratch directory: {sorted(foreign)[:5]}"


def test_the_endpoint_serves_the_runs_best_and_publishes_a_version_from_storage(cluster) -> None:
    """`fieldkit serve --adapter s3://.../multi/best` on the cluster the run used (after the test above)."""
    import httpx
    import openai
    import ray
    from conftest import free_port
    from ray import serve

    from fieldkit.config import RunConfig
    from services.serve import AdapterSource, start_endpoint
    from services.serve.app import DEPLOYMENT
    from services.serve.launch import config_from_runs

    best = f"{cluster['storage']}/multi/best"
    tmp = cluster["tmp"]
    admin = "admin-key-5b1d"
    base = RunConfig.model_validate(
        {"paths": {"runs_dir": str(tmp / "serve-runs"), "node_cache": str(tmp / "launcher-cache")},
         "serve": {"port": free_port(), "admin_key": admin, "app_name": "multi-serve"}}
    )  # fmt: skip
    config, source = config_from_runs([AdapterSource(best)], base)  # what `fieldkit serve --adapter` does
    assert source == f"{cluster['storage']}/multi/config.yaml"  # the driver wrote it to the object store
    assert config.model.name_or_path == cluster["model"] and config.paths.storage == cluster["storage"]
    assert config.resources.placement["policy"] == {"node_b": 1}  # the policy server on node B, as in training
    assert config.model.engine == "hf"  # the run's engine, as everything else of its model
    # best's adapter_ref.json names it as the learner did (<run>-v<N>); that name is the served one, read through the
    # launcher's cache (never the cache directory's name)
    served = Storage(cluster["storage"], tmp / "reader").read_json("multi/best/adapter_ref.json")["name"]
    try:
        endpoint = start_endpoint(config, [AdapterSource(best)])
        assert endpoint.models == ["tiny", served] and served.startswith("multi-v")  # the model by its last part
        client = openai.OpenAI(base_url=endpoint.base_url, api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "ls"}], max_tokens=4)
        assert reply.model == served and reply.usage.completion_tokens >= 1
        replica = serve.get_deployment_handle(DEPLOYMENT, "multi-serve")
        loaded = replica.loaded_adapters.remote().result(timeout_s=60)
        assert [(a.name, a.probe is not None and a.probe.passed) for a in loaded] == [(served, True)]

        def publish(body: dict) -> httpx.Response:
            headers = {"Authorization": f"Bearer {admin}"}
            return httpx.post(f"{endpoint.base_url}/adapters", json=body, headers=headers, timeout=120)

        published = publish({"run": "multi", "version": 2})  # served under the run's name
        assert published.status_code == 200, published.text
        (version,) = published.json()["data"]
        assert (version["name"], version["version"], version["probe"]["passed"]) == ("multi", 2, True)
        assert client.chat.completions.create(model="multi", messages=[{"role": "user", "content": "ls"}],
                                              max_tokens=2).model == "multi"  # fmt: skip
        missing = publish({"run": "multi", "version": 9})
        says = missing.json()["error"]["message"]  # the versions retention kept: 1-3, and 0 when it was the best
        assert missing.status_code == 404 and "run 'multi' version 9" in says and "1, 2, 3; best" in says, says
        for response in (published, missing):  # neither the bucket nor a node's cache in an answer
            assert "s3://" not in response.text and "fieldkit-test" not in response.text
            assert str(tmp) not in response.text
    finally:
        serve.shutdown()
        ray.shutdown()
    assert_each_node_kept_to_its_own_scratch(cluster)  # the replica read the model from its own node's cache
