"""Run storage (fieldkit.storage) on a local directory and on a real S3 server (moto on 127.0.0.1): a version is
visible only once complete, a download is cached per node and checked, and errors name the URI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import BUCKET, client_env, s3_server

from fieldkit.storage import MANIFEST, Storage, StorageError, fetch_dir


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    with s3_server() as env, client_env(env):
        yield env


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "store"), tmp_path / "cache")
    request.getfixturevalue("s3_env")
    return Storage(f"s3://{BUCKET}/{tmp_path.name}", tmp_path / "cache")


def version(root: Path, weights: bytes) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(weights)
    (root / "sub" / "adapter_config.json").write_text('{"r": 8}')
    return root


def test_put_fetch_round_trip_and_a_second_fetch_is_cached(storage: Storage, tmp_path: Path) -> None:
    uri = storage.put_dir(version(storage.staging("run/adapters/run-v1"), b"w1"), "run/adapters/run-v1")
    assert storage.key_of(uri) == "run/adapters/run-v1"
    local = fetch_dir(uri, tmp_path / "other-node")  # another node: its own cache
    assert (local / "adapter_model.safetensors").read_bytes() == b"w1"
    assert (local / "sub" / "adapter_config.json").read_text() == '{"r": 8}'
    if storage.remote:
        assert local.is_relative_to(tmp_path / "other-node")
        stamp = (local / "adapter_model.safetensors").stat().st_mtime_ns
        assert fetch_dir(uri, tmp_path / "other-node") == local  # no download the second time
        assert (local / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    # replaced under the same key: the next fetch sees the new content, not the cached old one
    storage.put_dir(version(storage.staging("run/adapters/run-v1"), b"w1-again"), "run/adapters/run-v1")
    assert (fetch_dir(uri, tmp_path / "other-node") / "adapter_model.safetensors").read_bytes() == b"w1-again"
    assert storage.children("run/adapters") == ["run-v1"]


def test_an_incomplete_upload_is_not_listed_nor_fetched(storage: Storage, tmp_path: Path) -> None:
    storage.put_dir(version(storage.staging("run/adapters/run-v1"), b"w1"), "run/adapters/run-v1")
    if storage.remote:  # what a learner killed mid-upload leaves: files, no manifest
        storage._write(f"{storage._path('run/adapters/run-v2')}/adapter_model.safetensors", b"half")
    else:  # on a filesystem the upload is assembled beside its name: a crash leaves the staging directory
        version(storage.staging("run/adapters/run-v2"), b"half")
    assert storage.children("run/adapters") == ["run-v1"]
    if storage.remote:
        with pytest.raises(StorageError, match=r"run-v2: no complete version there"):
            storage.fetch("run/adapters/run-v2")


def test_copy_json_and_delete(storage: Storage) -> None:
    storage.put_dir(version(storage.staging("run/adapters/run-v3"), b"w3"), "run/adapters/run-v3")
    storage.copy_dir("run/adapters/run-v3", "run/best", {"adapter_ref.json": b"{}"})
    best = storage.fetch("run/best")
    assert (best / "adapter_model.safetensors").read_bytes() == b"w3" and (best / "adapter_ref.json").exists()
    assert json.loads((best / MANIFEST).read_text())["files"]["adapter_ref.json"]["size"] == 2
    storage.write_json("run/latest.json", {"step": 3})
    assert storage.read_json("run/latest.json") == {"step": 3} and storage.exists("run/latest.json")
    storage.delete("run/adapters/run-v3")
    assert storage.children("run/adapters") == [] and not storage.exists(
        "run/adapters/run-v3/adapter_model.safetensors"
    )
    storage.delete("run/adapters/never-there")


def test_a_corrupt_download_and_a_missing_object_are_named(s3_env: dict[str, str], tmp_path: Path) -> None:
    storage = Storage(f"s3://{BUCKET}/{tmp_path.name}", tmp_path / "cache")
    storage.put_dir(version(storage.staging("run/adapters/run-v1"), b"w1"), "run/adapters/run-v1")
    storage._write(f"{storage._path('run/adapters/run-v1')}/adapter_model.safetensors", b"garbled")
    with pytest.raises(StorageError, match=r"adapter_model.safetensors arrived as .* the manifest says"):
        fetch_dir(storage.uri("run/adapters/run-v1"), tmp_path / "other-node")
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/{tmp_path.name}/run/latest.json: no such object"):
        storage.read_json("run/latest.json")
