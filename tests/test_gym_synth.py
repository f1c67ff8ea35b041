"""The persona synthesiser and the HTTP client against the real vLLM CPU OpenAI server serving the tiny model.

The tiny model writes nonsense; guided decoding must still make every reply schema-valid JSON, and the pipeline must
keep only tasks whose oracle passes (with this model: none). One server per module (~60 s to start here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from typer.testing import CliRunner

from fieldkit.client import ChatClient, ChatError, ContextLengthError
from fieldkit.gym.generator import generate_persona
from fieldkit.gym.oracle import check_task
from fieldkit.gym.personas import persona
from fieldkit.gym.synth import SynthLimits, draft_schema, draft_to_task, prompt, synthesise, task_as_draft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir: Path, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model_dir), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "4096",
        # guidance handles the whole schema (patterns, lengths); no free whitespace, so a weak model cannot pad
        # the JSON with blanks until max_tokens cuts it off
        "--structured-outputs-config", '{"backend": "guidance", "disable_any_whitespace": true}',
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"vLLM server not ready in 480 s:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def runner():
    from sandbox.runner import oracle_runner

    return oracle_runner("auto")  # model-written commands run in the strongest sandbox this machine has


def test_a_proven_draft_is_kept_and_a_broken_one_is_not(runner) -> None:
    spec = persona("backend-developer")
    task = generate_persona(spec, 2, 0)[1]
    draft = task_as_draft(task)
    kept = draft_to_task(draft, "synth-x-000", spec, task.workspace_seed)
    assert check_task(kept, runner).ok
    broken = draft_to_task({**draft, "solution": ["true"]}, "synth-x-001", spec, task.workspace_seed)
    assert not check_task(broken, runner).ok


@pytest.mark.engine
def test_guided_decoding_returns_schema_valid_json(vllm_server) -> None:
    schema = draft_schema(SynthLimits())
    spec = persona("embedded-firmware-dev")
    example = generate_persona(spec, 1, 0)[0]
    with ChatClient(vllm_server) as client:
        assert client.resolve_model() == "tiny" and client.context_window() == 4096
        for seed in range(3):
            draft = client.chat_json(
                prompt(spec, example.workspace_seed, example), schema, max_tokens=1536, temperature=1.0, seed=seed
            )
            jsonschema.validate(draft, schema)


@pytest.mark.engine
def test_the_pipeline_keeps_only_tasks_whose_oracle_passes(vllm_server, runner) -> None:
    with ChatClient(vllm_server) as client:
        report = synthesise(client, runner, per_persona=2, roles=["indie-game-dev", "academic-author"])
    assert len(report.kept) + len(report.rejected) == 4
    assert [r for r in report.rejected if r.stage in ("request", "json")] == []  # every reply was valid JSON
    assert report.rejected, "nonsense drafts from a random model must not pass"
    assert {r.stage for r in report.rejected} <= {"schema", "oracle"}
    for task in report.kept:
        assert check_task(task, runner).ok


@pytest.mark.engine
def test_context_guard_counts_with_the_server_tokenizer(vllm_server) -> None:
    with ChatClient(vllm_server) as client:
        short = [{"role": "user", "content": "ls"}]
        exact = client.count_prompt_tokens(short)
        assert 3 <= exact <= 20 and client._can_tokenize is True
        with pytest.raises(ContextLengthError, match="4096-token context"):
            client.chat([{"role": "user", "content": "list the files " * 2000}], max_tokens=16)
        assert client.fit_max_tokens(short, 100_000) == 4096 - exact


@pytest.mark.engine
def test_a_bad_request_to_vllm_fails_once_without_retries(vllm_server) -> None:
    with ChatClient(vllm_server, max_retries=3) as client, pytest.raises(ChatError) as err:
        client.chat([{"role": "user", "content": "hi"}], max_tokens=4, temperature=-1.0)
    assert (err.value.status, err.value.attempts) == (400, 1)


@pytest.mark.engine
def test_cli_synth_writes_only_kept_tasks(vllm_server, tmp_path) -> None:
    from fieldkit.cli import app

    out = tmp_path / "synth.jsonl"
    result = CliRunner().invoke(
        app,
        ["gym", "synth", "--base-url", vllm_server, "--out", str(out), "--persona", "ml-engineer",
         "--per-persona", "1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["kept"]) + len(report["rejected"]) == 1
    assert len(out.read_text().splitlines()) == len(report["kept"])
