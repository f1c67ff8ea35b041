"""The Learner actor on a real local Ray cluster: steps, publishes, resumes; its adapter loads in the vLLM engine
and the engine's log-probs of the probe match the learner's."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_batches import fixed_batch

from fieldkit.config import RunConfig

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=3, include_dashboard=False)  # never join another cluster
    yield
    if started:
        ray.shutdown()


def learner_config(tmp_path: Path, **algorithm) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run_name": "learner-test",
            "model": {"max_model_len": 512},  # engine in bfloat16, learner in float32 (auto on CPU)
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "algorithm": {"learning_rate": 5e-3, **algorithm},
            "paths": {"runs_dir": str(tmp_path), "models_dir": str(REPO / "runs" / "models")},
        }
    )


@pytest.fixture(scope="module")
def trained(ray_cluster, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A learner actor that took three steps on a fixed batch and published version 1."""
    import ray

    from services.learner import start_learner

    tmp_path = tmp_path_factory.mktemp("learner")
    config = learner_config(tmp_path)
    learner = start_learner(config)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.0, 1.0], config.algorithm)
    metrics = [ray.get(learner.step.remote(batch)) for _ in range(3)]
    ref = ray.get(learner.publish.remote(1))
    yield config, learner, batch, metrics, ref
    ray.kill(learner)


def test_steps_report_metrics_and_publish_writes_an_adapter_with_its_probe(trained) -> None:
    config, _, _, metrics, ref = trained
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert {"policy_loss", "kl", "entropy", "grad_norm", "clip_fraction", "weight_delta_l2", "tokens_per_s"} <= set(
        metrics[-1]
    )
    assert (ref.name, ref.version, ref.rank) == ("learner-test-v1", 1, 8)
    assert Path(ref.path) == (config.run_dir / "adapters" / "learner-test-v1").resolve()
    assert (Path(ref.path) / "adapter_model.safetensors").exists()
    assert ref.probe is not None and len(ref.probe.logprobs) == len(ref.probe.continuation_token_ids)


def test_resume_in_a_new_actor_continues_from_the_saved_state(trained, tmp_path: Path) -> None:
    import ray

    from services.learner import start_learner

    config, learner, batch, _, _ = trained
    ray.get(learner.save_state.remote(str(tmp_path / "state")))
    resumed = start_learner(config)
    try:
        assert ray.get(resumed.load_state.remote(str(tmp_path / "state"))) == 3
        # same weights, optimizer and RNG: the next step is the same step in both actors
        expected, got = ray.get([learner.step.remote(batch), resumed.step.remote(batch)])
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["weight_delta_l2"] == pytest.approx(expected["weight_delta_l2"], rel=1e-4)
    finally:
        ray.kill(resumed)


@pytest.mark.engine
def test_a_published_adapter_loads_in_the_vllm_engine_and_its_probe_matches(trained) -> None:
    import ray

    from services.policy import start_policy_server

    config, _, _, _, ref = trained
    server = start_policy_server(config)
    try:
        loaded = ray.get(server.load_adapter.remote(ref))
        assert loaded.version == 1 and loaded.probe is not None
        assert loaded.probe.passed, loaded.probe
        assert loaded.probe.distinguishable_from_base, loaded.probe  # the probe saw the trained weights
    finally:
        ray.get(server.shutdown.remote())
        ray.kill(server)
