"""The Learner actor on a real local Ray cluster: steps, publishes, resumes; its adapter loads in the real engines,
whose sampled log-probs at temperature 0.4 are the learner's to float32 precision; and a learner killed inside
`publish` or `save_state` (or right after SFT) still publishes, byte for byte, the adapters a run without the kill
publishes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rl_episodes import make_episode, make_turn
from training_batches import REPLIES, fixed_batch

from fieldkit.config import RunConfig
from fieldkit.rl.batch import build_train_batch
from fieldkit.rl.records import TrainBatch
from fieldkit.runs import RunDir, RunStore
from fieldkit.storage import Storage

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
TEMPERATURE = 0.4  # the demo's rollout temperature


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=3, include_dashboard=False)  # never join another cluster
    yield
    if started:
        ray.shutdown()


def learner_config(tmp_path: Path, **sections: Any) -> RunConfig:
    algorithm = sections.pop("algorithm", {})
    return RunConfig.model_validate(
        {
            "run_name": "learner-test",
            "model": {"max_model_len": 512},  # engine and learner in float32 (auto on CPU)
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "algorithm": {"learning_rate": 5e-3, **algorithm},
            "paths": {"runs_dir": str(tmp_path), "models_dir": str(REPO / "runs" / "models")},
            **sections,
        }
    )


@pytest.fixture(scope="module")
def trained(ray_cluster, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A learner actor that took three steps on a fixed batch and published version 3."""
    import ray

    from services.learner import start_learner

    tmp_path = tmp_path_factory.mktemp("learner")
    config = learner_config(tmp_path)
    learner = start_learner(config)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.0, 1.0], config.algorithm)
    metrics = [ray.get(learner.step.remote(batch, step)) for step in (1, 2, 3)]
    ref = ray.get(learner.publish.remote(3))
    yield config, learner, batch, metrics, ref
    ray.kill(learner)


def test_steps_report_metrics_and_publish_writes_an_adapter_with_its_probe(trained) -> None:
    config, _, _, metrics, ref = trained
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    names = {"policy_loss", "kl", "entropy", "grad_norm", "clip_fraction", "weight_delta_l2", "tokens_per_s"}
    names |= {"ratio_mean", "ratio_min", "ratio_max", "is_masked_frac", "mismatch_kl"}
    assert names <= set(metrics[-1])
    assert (ref.name, ref.version, ref.rank) == ("learner-test-v3", 3, 8)
    assert Path(ref.path) == (config.run_dir / "adapters" / "learner-test-v3").resolve()
    assert (Path(ref.path) / "adapter_model.safetensors").exists()
    assert ref.probe is not None and len(ref.probe.logprobs) == len(ref.probe.continuation_token_ids)


def test_resume_in_a_new_actor_continues_from_the_saved_state(trained, tmp_path: Path) -> None:
    import ray

    from services.learner import start_learner

    config, learner, batch, _, _ = trained
    key = "learner-test/checkpoints/000003/learner"  # in run storage (the runs directory by default)
    ray.get(learner.save_state.remote(key, 3))
    assert (config.paths.runs_dir / key / "optimizer.pt").is_file()
    resumed = start_learner(config)
    try:
        assert ray.get(resumed.load_state.remote(key)) == 3
        # same weights, optimizer and RNG: the next step is the same step in both actors
        expected, got = ray.get([learner.step.remote(batch, 4), resumed.step.remote(batch, 4)])
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["weight_delta_l2"] == pytest.approx(expected["weight_delta_l2"], rel=1e-4)
    finally:
        ray.kill(resumed)


@pytest.fixture(scope="module", params=["vllm", "hf"])
def engine(request: pytest.FixtureRequest, trained) -> Iterator[tuple[str, Any]]:
    """A policy server of each engine for the module (a vLLM start costs ~40 s here)."""
    import ray

    from services.policy import start_policy_server

    config = trained[0]
    server = start_policy_server(config.model_copy(update={"model": config.model.model_copy(
        update={"engine": request.param})}))  # fmt: skip
    yield request.param, server
    ray.get(server.shutdown.remote())
    ray.kill(server)


@pytest.mark.engine
def test_a_published_adapter_loads_and_its_probe_matches_to_float32_precision(trained, engine) -> None:
    import ray

    _, server = engine
    ref = trained[4]
    loaded = ray.get(server.load_adapter.remote(ref))
    assert loaded.version == 3 and loaded.probe is not None
    assert loaded.probe.tolerance == 1e-3  # float32 engine: lora.probe_tolerance resolves to 1e-3 nats/token
    assert loaded.probe.passed, loaded.probe
    assert loaded.probe.distinguishable_from_base, loaded.probe  # the probe saw the trained weights
    print(f"\nprobe, {engine[0]} engine vs learner: {loaded.probe}")


def sampled_batch(server: Any, adapter: str, n: int) -> TrainBatch:
    """`n` one-turn replies sampled by the engine at TEMPERATURE under `adapter`, as a GRPO batch of one group."""
    import ray

    from fieldkit.generation import GenerateRequest

    requests = [
        GenerateRequest(
            messages=[{"role": "user", "content": f"Task {i}: list the files, then count the lines of data.csv."}],
            max_tokens=24,
            temperature=TEMPERATURE,
            seed=100 + i,
            adapter=adapter,
        )
        for i in range(n)
    ]
    results = ray.get([server.generate.remote(r) for r in requests])
    turns = [
        make_turn(
            0, prompt=(*r.prompt_token_ids,), response=(*r.token_ids,), logprobs=(*r.logprobs,), temperature=TEMPERATURE
        )
        for r in results
    ]
    episodes = [make_episode(f"e{i}", float(i % 2), [turn]) for i, turn in enumerate(turns)]
    return build_train_batch([episodes], RunConfig().algorithm)


@pytest.mark.engine
def test_engine_and_learner_log_probs_agree_at_the_sampling_temperature(
    engine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """On-policy at T = 0.4 (the engine serves v2, the learner is at step 2, step 3 trains on what v2 sampled): the
    engine's behaviour log-probs are the learner's of the same tokens, so π_θ/π_old before the update is 1 whichever
    side π_old comes from."""
    import ray
    import torch

    from fieldkit.training.logprobs import token_logprobs
    from fieldkit.training.microbatch import collate
    from fieldkit.training.trainer import LoraPolicyTrainer

    name, server = engine
    config = learner_config(tmp_path, run_name=f"agree-{name}")
    trainer = LoraPolicyTrainer(config)
    for step in (1, 2):  # an adapter that moved away from the base
        trainer.step(fixed_batch(tiny_model_dir, [1.0, 0.0, 0.0, 1.0], config.algorithm), step)
    ray.get(server.load_adapter.remote(trainer.publish(2)))
    trainer.save_state(tmp_path / "state", 2)
    batch = sampled_batch(server, f"agree-{name}-v2", 8)

    mb = collate(batch.sequences, "cpu")
    sampled = mb.mask_bt.bool()
    with torch.no_grad():  # per token, before the update: the learner's log-probs of the engine's samples
        logp_bt, _ = token_logprobs(trainer.model, mb.input_ids_bt, mb.attention_bt, temperature_bt=mb.temperature_bt)
        raw_bt, _ = token_logprobs(trainer.model, mb.input_ids_bt, mb.attention_bt)  # at T = 1, as before
    diff_t = (logp_bt - mb.behaviour_logp_bt)[sampled].abs()
    figures: dict[str, dict[str, float]] = {}
    for source in ("learner", "engine"):
        algorithm = {"behaviour_logprobs": source, "is_correction": "tis" if source == "learner" else "none"}
        resumed = LoraPolicyTrainer(learner_config(tmp_path, run_name=f"agree-{name}", algorithm=algorithm))
        resumed.load_state(tmp_path / "state")
        figures[source] = resumed.step(batch, 3)
    report = {
        "tokens": int(diff_t.numel()),
        "p99": float(torch.quantile(diff_t, 0.99)),
        "max": float(diff_t.max()),
        "t1_p99": float(torch.quantile((raw_bt - mb.behaviour_logp_bt)[sampled].abs(), 0.99)),
        **{f"{s}.{k}": figures[s][k] for s in figures for k in ("mismatch_kl", "ratio_min", "ratio_max")},
    }
    print(f"\n{name} engine vs learner at T={TEMPERATURE}: {report}")
    assert report["tokens"] >= 40, report
    assert report["p99"] < 0.01, report
    assert report["t1_p99"] > 0.1, report  # scored at T = 1 they would disagree: the test can tell
    for source, metrics in figures.items():
        assert metrics["mismatch_kl"] < 1e-3, (source, report)
        assert abs(metrics["ratio_min"] - 1) < 1e-3 and abs(metrics["ratio_max"] - 1) < 1e-3, (source, report)
        assert metrics["is_masked_frac"] == 0, (source, report)


# ---- a learner killed inside publish, save_state, or right after SFT ------------------------------------------


def kill_inside(actor: Any, module: str, function: str) -> None:
    """The actor's next call of `module.function` kills its process: what an OOM kill at that moment does. The
    restarted process imports the module afresh, unpatched. (Nested: the worker cannot import this test module.)"""
    import ray

    def patch(_: Any) -> None:
        import importlib

        def die(*_: Any, **__: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        setattr(importlib.import_module(module), function, die)

    ray.get(actor.__ray_call__.remote(patch))


def adapter_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def drive(config: RunConfig, tiny_model_dir: Path, strike: Callable[[Any, str, int], None]) -> dict[str, Any]:
    """What the driver does with the learner: SFT, publish v0, checkpoint 0, then per step update, publish,
    checkpoint, mark it latest; `strike(actor, call, step)` runs before each call. Returns the published adapters'
    bytes, the checkpoints' adapter bytes and the pids the actor ran in."""
    import ray

    from fieldkit.training.sft import examples_from_chats
    from services.learner import LearnerSession, start_learner

    actor = start_learner(config)
    session = LearnerSession(actor)
    run = RunDir(config.run_dir)  # the default run storage: the run directory itself
    store = RunStore(Storage(config.storage_root), config.run_name)
    pids = set()

    def pid() -> int:
        return ray.get(actor.__ray_call__.remote(lambda _: os.getpid()))

    def checkpoint(step: int) -> None:
        strike(actor, "save_state", step)
        session.save_state(f"{store.checkpoint(step)}/learner", step)
        (run.checkpoint(step) / "state.json").write_text("{}")
        store.mark_latest(step)

    try:
        from transformers import AutoTokenizer

        chat = [{"role": "user", "content": "List the files."}, {"role": "assistant", "content": REPLIES[0]}]
        session.warm_start(examples_from_chats(AutoTokenizer.from_pretrained(tiny_model_dir), [chat] * 4))
        published = {}
        for step in (0, 1, 2):
            pids.add(pid())
            if step:
                session.step(fixed_batch(tiny_model_dir, [1.0, 0.0, 0.5], config.algorithm), step)
            strike(actor, "publish", step)
            published[step] = adapter_bytes(Path(session.publish(step).path))
            checkpoint(step)
        pids.add(pid())
        saved = {step: adapter_bytes(run.checkpoint(step) / "learner" / "adapter") for step in (0, 1, 2)}
        return {"published": published, "saved": saved, "pids": pids}
    finally:
        ray.kill(actor)


@pytest.mark.slow
def test_a_learner_killed_inside_publish_or_save_state_publishes_the_same_adapters(
    ray_cluster, tiny_model_dir: Path, tmp_path: Path
) -> None:
    sections = {"sft": {"warm_start": True, "epochs": 1, "batch_size": 2}}
    clean = drive(learner_config(tmp_path / "clean", **sections), tiny_model_dir, lambda *_: None)
    kills = {  # where each kill lands
        ("publish", 0): ("fieldkit.training.probe", "build_probe"),  # right after SFT: v0 written, no probe yet
        ("publish", 1): ("fieldkit.training.probe", "build_probe"),  # v1 written, its probe not yet
        ("save_state", 2): ("fieldkit.training.checkpoint", "rng_state"),  # adapter and optimizer state written
    }

    def strike(actor: Any, call: str, step: int) -> None:
        if (call, step) in kills:
            kill_inside(actor, *kills[(call, step)])

    killed = drive(learner_config(tmp_path / "killed", **sections), tiny_model_dir, strike)
    assert len(killed["pids"]) == 4, killed["pids"]  # three restarts, one per kill
    assert clean["published"][0] != clean["published"][1] != clean["published"][2]  # every step moved the adapter
    for step in (0, 1, 2):
        assert killed["published"][step] == clean["published"][step], f"adapter v{step} differs"
        assert killed["saved"][step] == clean["saved"][step], f"checkpoint {step}'s adapter differs"
