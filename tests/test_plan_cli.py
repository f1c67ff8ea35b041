"""`fieldkit plan`: the table, --json for tools, --emit ray, the inputs it takes, and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fieldkit.cli import app

REPO = Path(__file__).resolve().parent.parent
RUN_7B = REPO / "deploy" / "configs" / "clawgym-grpo-7b.yaml"
runner = CliRunner()


def invoke(*args: str):  # -> click.testing.Result
    return runner.invoke(app, ["plan", *args], env={"COLUMNS": "200"})


def as_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_the_table_shows_every_term_and_the_layout() -> None:
    result = invoke("--model", "qwen2.5-7b", "--method", "lora", "--gpu", "gb10", "--rollout-batch", "8")
    assert result.exit_code == 0, result.output
    for text in ("memory terms", "base weights (bfloat16, frozen)", "LoRA optimizer", "KV cache", "activations",
                 "fits 1 x gb10", "co-resident on one GPU", "engine_gpu_fraction", "fewest of other GPUs"):  # fmt: skip
        assert text in result.output, text


def test_json_is_the_plan_for_tools() -> None:
    plan = as_json("--model", "nemotron-class-100b", "--method", "qlora", "--gpu", "h100")
    assert plan["best"]["gpus"] == 2 and plan["best"]["fits"] and plan["other_gpus"]["h200"] == 1
    assert {t["name"] for t in plan["terms"]} >= {"base weights (NF4, frozen)", "NF4 quantisation constants"}
    assert plan["summary"].startswith("2 x h100")
    assert plan["request"]["method"] == "qlora" and plan["request"]["seq"] == 2048


def test_a_local_config_json_plans_like_its_catalogue_twin(tiny_model_dir: Path) -> None:
    plan = as_json("--config", str(tiny_model_dir / "config.json"), "--method", "full", "--seq", "512")
    assert plan["model"] == tiny_model_dir.name and plan["best"]["gpus"] == 1
    assert plan["params"] < 2_000_000


def test_a_run_config_supplies_model_lora_and_rollouts() -> None:
    plan = as_json("--run", str(RUN_7B), "--gpu", "gb10")
    assert plan["model"] == "qwen2.5-7b" and plan["request"]["rank"] == 16
    assert plan["request"]["rollout_batch"] == 32 and plan["request"]["kernels"] == "eager"
    overridden = as_json("--run", str(RUN_7B), "--gpu", "gb10", "--rollout-batch", "4")
    assert overridden["request"]["rollout_batch"] == 4 and overridden["engine_total_gb"] < plan["engine_total_gb"]


def test_emit_ray_gives_bundles_resources_and_a_rayjob() -> None:
    plan = as_json(
        "--run", str(RUN_7B), "--gpu", "h100", "--recompute", "full", "--emit", "ray", "--storage", "s3://b/p"
    )
    ray, best = plan["ray"], plan["best"]
    learner = next(g for g in ray["placement_groups"] if g["name"] == "learner")
    assert len(learner["bundles"]) == best["learner_gpus"] and learner["bundles"][0]["GPU"] == 1
    assert ray["resources"]["num_gpus"] == best["gpus"]
    job = ray["rayjob"]
    assert job["spec"]["entrypoint"] == f"python -m services.train --config {RUN_7B} --set paths.storage=s3://b/p"
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    gpus = int(worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus * worker["replicas"] >= best["gpus"]
    text = invoke("--model", "llama-3.1-70b", "--method", "full", "--gpu", "h100", "--emit", "ray").output
    assert "kind: RayJob" in text and "learner: PACK" in text  # more GPUs than one node: best-effort packing
    assert "deploy/configs/llama-3.1-70b-full.yaml: write it" in text


def test_a_user_catalogue_adds_a_gpu(tmp_path: Path) -> None:
    mine = tmp_path / "gpus.yaml"
    mine.write_text("hardware:\n  mi300x: {label: AMD MI300X, memory_gb: 192, bandwidth_gbs: 5300, "
                    "interconnect: Infinity Fabric, interconnect_gbs: 448, bf16_tflops: 1307}\n")  # fmt: skip
    plan = as_json("--model", "llama-3.1-70b", "--method", "lora", "--gpu", "mi300x", "--catalog", str(mine))
    assert plan["gpu_label"] == "AMD MI300X"
    assert plan["best"]["gpus"] == plan["other_gpus"]["b200"]  # the same 192 GB, so the same answer


def test_nothing_fits_exits_1_and_says_by_how_much() -> None:
    result = invoke("--model", "llama-3.1-405b", "--method", "full", "--gpu", "rtx4090", "--max-gpus", "32")
    assert result.exit_code == 1
    assert "does not fit" in result.output and "GB more than the 24 GB" in result.output


def test_bad_input_exits_2_naming_the_field() -> None:
    cases = {
        ("--model", "qwen9-7b"): "model: unknown model 'qwen9-7b'; known: ",
        ("--model", "qwen2.5-7b", "--gpu", "tpu"): "gpu: unknown GPU 'tpu'; known: ",
        ("--model", "qwen2.5-7b", "--micro-batch", "-1"): "micro_batch: ",
        ("--model", "qwen2.5-7b", "--rank", "4096"): "rank: 4096 is above",
        ("--model", "qwen2.5-7b", "--config", "x.json"): "exactly one of",
        ("--model", "qwen2.5-7b", "--emit", "slurm"): "emit: unknown target 'slurm'",
        ("--model", "qwen2.5-7b", "--recompute", "some"): "recompute: ",
        ("--model", "qwen2.5-7b", "--rollout-batch", "8", "--engine", "separate", "--max-gpus", "1"): "max_gpus: 1 GPU",
    }
    for args, message in cases.items():
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)


def test_a_broken_run_config_lists_its_problems(tmp_path: Path) -> None:
    broken = tmp_path / "run.yaml"
    broken.write_text("lora:\n  rank: 0\n")
    result = invoke("--run", str(broken))
    assert result.exit_code == 2 and "lora.rank = 0" in result.output
