"""House rule: importing fieldkit loads no torch, Ray or vLLM; sandbox never loads Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "vllm")


def loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize(
    "modules",
    [
        "fieldkit, fieldkit.config, fieldkit.cli, fieldkit.tiny_model",
        "fieldkit.rl.advantages, fieldkit.rl.batch, fieldkit.rl.losses, fieldkit.rl.tds",
        "fieldkit.training.logprobs, fieldkit.training.trainer, fieldkit.training.sft, fieldkit.training.checkpoint",
        "fieldkit.generation, fieldkit.chat_tokens, fieldkit.training.probe, fieldkit.training.random_adapter",
        "fieldkit.lineage, fieldkit.eval, fieldkit.cli.lineage, fieldkit.cli.eval",
        "fieldkit.cli.serve, fieldkit.cli.dashboard",
        "fieldkit.capabilities, fieldkit.capabilities.planner, fieldkit.capabilities.ray_layout, fieldkit.cli.plan",
        "fieldkit.gym.generator, fieldkit.gym.grader, fieldkit.gym.protocol, fieldkit.gym.synth, fieldkit.gym.corpus, "
        "fieldkit.gym.oracle, fieldkit.gym.validate, fieldkit.reward, fieldkit.client, fieldkit.cli.gym",
        "fieldkit.cli.sandbox",
    ],
)
def test_fieldkit_imports_no_heavy_runtime(modules: str) -> None:
    assert loaded_after(f"import {modules}") == []


def test_sandbox_imports_no_ray() -> None:
    modules = "sandbox, sandbox.base, sandbox.bwrap, sandbox.container, sandbox.local, sandbox.image, sandbox.probe"
    assert "ray" not in loaded_after(f"import {modules}")
