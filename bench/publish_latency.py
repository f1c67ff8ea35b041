"""Adapter publish latency, learner save -> serving (issue 18): the learner writes version v to run storage and the
policy server fetches, loads and verifies it (its probe). Baseline: storage a local directory (read where it is);
against it: an S3 object store (moto on 127.0.0.1, real HTTP), uploaded by the learner and downloaded into the
policy server's node cache. Then a 40 MB adapter-sized blob (a rank-16 LoRA of a 7B) through S3 against Ray's
object store, the alternative the issue names.

Run: `python -m bench.publish_latency` (needs the dev extras: moto[server]).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fieldkit.config import RunConfig

VERSIONS = 4
BLOB_MB = 40
BUCKET = "fieldkit-bench"


def start_moto() -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    return server, env


def publish_to_serving(config: RunConfig, policy: Any) -> tuple[float, float]:
    """Median (publish_s, publish -> served_s) over VERSIONS versions of one learner."""
    import ray

    from services.learner import start_learner

    learner = start_learner(config)
    publish, served = [], []
    for version in range(VERSIONS):
        # the same weights under a newer version: what is measured is moving and verifying them, not training
        ray.get(learner.__ray_call__.remote(lambda actor, v: setattr(actor._trainer, "at_step", v), version))
        start = time.perf_counter()
        ref = ray.get(learner.publish.remote(version))
        publish.append(time.perf_counter() - start)
        info = ray.get(policy.load_adapter.remote(ref))
        assert info.probe is not None and info.probe.passed
        served.append(time.perf_counter() - start)
    ray.kill(learner)
    return statistics.median(publish), statistics.median(served)


def blob_transfer(storage: str, tmp: Path) -> tuple[float, float]:
    """Median seconds to move a BLOB_MB directory to another process's disk: (S3 upload + download, object store)."""
    import ray

    from fieldkit.storage import Storage

    @ray.remote(num_cpus=0)
    def receive(blob: bytes, target: str) -> int:  # what a policy server would do with the bytes: put them on disk
        Path(target).write_bytes(blob)
        return len(blob)

    @ray.remote(num_cpus=0)
    def download(uri: str, cache: str) -> int:
        from fieldkit.storage import fetch_dir

        return sum(p.stat().st_size for p in fetch_dir(uri, cache).iterdir())

    data = os.urandom(BLOB_MB << 20)
    s3, store = [], []
    for i in range(3):
        start = time.perf_counter()
        staging = tmp / f"blob-{i}"
        staging.mkdir()
        (staging / "adapter_model.safetensors").write_bytes(data)
        uri = Storage(storage, tmp / "writer").put_dir(staging, f"blob/v{i}")
        ray.get(download.remote(uri, str(tmp / "reader")))
        s3.append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.get(receive.remote(ray.put(data), str(tmp / f"received-{i}")))
        store.append(time.perf_counter() - start)
    return statistics.median(s3), statistics.median(store)


def main() -> dict[str, float]:
    import ray

    from services.policy import start_policy_server

    moto, env = start_moto()
    os.environ.update(env)  # before Ray starts: its workers inherit the credentials and the endpoint
    try:
        ray.init(address="local", num_cpus=4, include_dashboard=False)  # never join a `ray start` cluster
        with tempfile.TemporaryDirectory() as tmp:
            base = {"model": {"engine": "vllm", "max_model_len": 1024}, "lora": {"rank": 8, "max_lora_rank": 16}}
            local = RunConfig.model_validate({**base, "run_name": "local", "paths": {"storage": f"{tmp}/store"}})
            s3 = RunConfig.model_validate({**base, "run_name": "s3", "paths": {"storage": f"s3://{BUCKET}/runs",
                                           "node_cache": f"{tmp}/cache"}})  # fmt: skip
            policy = start_policy_server(local)
            local_publish, local_served = publish_to_serving(local, policy)
            s3_publish, s3_served = publish_to_serving(s3, policy)
            blob_s3, blob_store = blob_transfer(f"s3://{BUCKET}/bench", Path(tmp))
        ray.shutdown()
    finally:
        moto.terminate()
    figures = {
        "local_publish_s": local_publish, "local_publish_to_served_s": local_served,
        "s3_publish_s": s3_publish, "s3_publish_to_served_s": s3_served,
        "s3_over_local_served": s3_served / local_served,
        "blob_s3_s": blob_s3, "blob_object_store_s": blob_store, "blob_s3_over_object_store": blob_s3 / blob_store,
    }  # fmt: skip
    print(f"adapter publish -> served (load + probe), tiny model, vLLM CPU engine; median of {VERSIONS}")
    print(f"{'measure':<46}{'value':>10}{'ratio':>9}  baseline")
    rows = [
        ("local storage: learner save (s)", local_publish, None, ""),
        ("local storage: save -> served (s)", local_served, 1.0, "itself"),
        ("S3 (moto, 127.0.0.1): learner save + upload (s)", s3_publish, None, ""),
        ("S3: save -> downloaded, served (s)", s3_served, s3_served / local_served, "local storage"),
        (f"{BLOB_MB} MB blob, Ray object store -> disk (s)", blob_store, 1.0, "itself"),
        (f"{BLOB_MB} MB blob, S3 upload + download (s)", blob_s3, blob_s3 / blob_store, "object store"),
    ]
    for name, value, ratio, baseline in rows:
        shown = f"{ratio:>9.1f}" if ratio is not None else " " * 9
        print(f"{name:<46}{value:>10.3f}{shown}  {baseline}")
    return figures


if __name__ == "__main__":
    main()
