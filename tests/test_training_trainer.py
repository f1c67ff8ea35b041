"""The learner's work on the tiny model: it lowers the loss, moves log-probs with the advantage, accumulates
micro-batches exactly, keeps its KL reference apart, measures π_θ/π_old without dropout noise, refuses calls for a
step its state does not hold, and resumes bit-for-bit from saved state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from training_batches import fixed_batch

torch = pytest.importorskip("torch")

from fieldkit.config import AlgorithmConfig, LoraConfig, ModelConfig, PathsConfig, RunConfig  # noqa: E402
from fieldkit.rl.batch import build_train_batch  # noqa: E402
from fieldkit.training.logprobs import token_logprobs  # noqa: E402
from fieldkit.training.microbatch import collate, plan_micro_batches  # noqa: E402
from fieldkit.training.trainer import LoraPolicyTrainer, StepMismatchError  # noqa: E402


def run_config(tiny_model_dir: Path, tmp_path: Path, **algorithm) -> RunConfig:
    return RunConfig(
        run_name="t",
        model=ModelConfig(learner_dtype="float32"),  # what auto picks on CPU; explicit for exact comparisons
        lora=LoraConfig(rank=8, alpha=16, dropout=0.0),
        algorithm=AlgorithmConfig(**{"learning_rate": 2e-3, **algorithm}),
        paths=PathsConfig(runs_dir=tmp_path, models_dir=tiny_model_dir.parent),
    )


def sampled_logp(trainer: LoraPolicyTrainer, batch) -> torch.Tensor:
    """Per-sequence mean log-prob of the sampled tokens, [sequences]."""
    mb = collate(batch.sequences, "cpu")
    with torch.no_grad():
        logp_bt, _ = token_logprobs(trainer.model, mb.input_ids_bt, mb.attention_bt)
    return (logp_bt * mb.mask_bt).sum(1) / mb.mask_bt.sum(1)


def lora_state(trainer: LoraPolicyTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_plan_micro_batches_respects_the_budget() -> None:
    assert plan_micro_batches([10, 30, 20, 25], 60) == [[1, 3], [2, 0]]  # 2 x 30 = 60, then 2 x 20 = 40
    assert plan_micro_batches([100, 5], 50) == [[0], [1]]  # too long for the budget: alone
    assert sorted(i for mb in plan_micro_batches([7] * 9, 21) for i in mb) == list(range(9))


def test_learner_lowers_the_loss_on_a_fixed_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(tiny_model_dir, tmp_path)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.0, 1.0], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    losses = [trainer.step(batch, step)["loss"] for step in range(1, 5)]
    assert losses[-1] < losses[0], losses
    metrics = trainer.step(batch, 5)
    for key in ("policy_loss", "kl", "entropy", "grad_norm", "clip_fraction", "weight_delta_l2", "tokens_per_s"):
        assert metrics[key] == metrics[key], key  # a number, not NaN
    assert metrics["kl"] > 0 and metrics["entropy"] > 0 and metrics["weight_delta_l2"] > 0
    assert 0 <= metrics["clip_fraction"] <= 1 and trainer.at_step == 5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_step_moves_sampled_log_probs_with_the_advantage(tiny_model_dir: Path, tmp_path: Path, sign: float) -> None:
    cfg = run_config(tiny_model_dir, tmp_path, kl_beta=0.0)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm)  # e0 gets A > 0, e1 A < 0
    if sign < 0:
        batch = batch.model_copy(update={"sequences": batch.sequences[::-1]})
    trainer = LoraPolicyTrainer(cfg)
    before = sampled_logp(trainer, batch)
    trainer.step(batch, 1)
    trainer.step(batch, 2)  # lora_B starts at zero: the first step moves only B, the second reaches the output
    change = sampled_logp(trainer, batch) - before
    positive = next(i for i, s in enumerate(batch.sequences) if s.advantages[-1] > 0)
    assert change[positive] > 0 and change[1 - positive] < 0, change


def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_model_dir: Path, tmp_path: Path) -> None:
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.5, 0.25])
    results = []
    pair = 2 * max(len(s.token_ids) for s in batch.sequences)
    for budget in (pair, 1 << 16):  # two sequences per micro-batch, or all four at once
        trainer = LoraPolicyTrainer(run_config(tiny_model_dir, tmp_path, micro_batch_tokens=budget))
        metrics = trainer.step(batch, 1)
        # compare gradients from the same starting weights, not the updated weights: Adam turns float-rounding
        # noise in near-zero gradients into full-size steps of either sign
        results.append((metrics, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}))
    (split, grads_split), (whole, grads_whole) = results
    assert split["micro_batches"] == 2 and whole["micro_batches"] == 1
    assert split["loss"] == pytest.approx(whole["loss"], abs=1e-6)  # ~0: on-policy, advantages sum to 0
    for name, grad in grads_whole.items():
        assert torch.allclose(grads_split[name], grad, rtol=1e-3, atol=1e-7), name


def test_the_kl_reference_is_the_starting_adapter_and_is_swapped_out_again(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = run_config(tiny_model_dir, tmp_path)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    assert trainer.step(batch, 1)["kl"] == pytest.approx(0.0, abs=1e-7)  # the policy is still the reference
    trainer.step(batch, 2)
    live = lora_state(trainer)
    assert trainer.step(batch, 3)["kl"] > 0
    assert any(not torch.equal(live[n], p) for n, p in lora_state(trainer).items())  # it trained on, not on the ref
    assert all(torch.equal(trainer.reference.weights[n], torch.zeros_like(w)) for n, w in live.items() if "lora_B" in n)


def own_logprobs_batch(trainer: LoraPolicyTrainer, batch):
    """`batch` with its behaviour log-probs replaced by the trainer's own (no grad, eval mode): as if its current
    adapter had sampled it in an engine that computes exactly like the learner."""
    mb = collate(batch.sequences, "cpu")
    with torch.no_grad():
        logp_bt, _ = token_logprobs(trainer.model, mb.input_ids_bt, mb.attention_bt, temperature_bt=mb.temperature_bt)
    sequences = [
        s.model_copy(update={"behaviour_logprobs": logp_bt[i, : len(s.token_ids)].tolist()})
        for i, s in enumerate(batch.sequences)
    ]
    return batch.model_copy(update={"sequences": sequences})


def test_the_ratio_before_the_update_is_one_without_dropout_noise(tiny_model_dir: Path, tmp_path: Path) -> None:
    """LoRA dropout 0.5 would move every ratio by tens of percent if it were on in RL passes."""
    cfg = run_config(tiny_model_dir, tmp_path, behaviour_logprobs="engine", is_correction="none")
    cfg = cfg.model_copy(update={"lora": LoraConfig(rank=8, alpha=16, dropout=0.5)})
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.5], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    trainer.step(batch, 1)
    trainer.step(batch, 2)  # lora_B is non-zero now: dropout on the LoRA input would change the output
    metrics = trainer.step(own_logprobs_batch(trainer, batch), 3)
    assert metrics["ratio_min"] == pytest.approx(1, abs=1e-5) and metrics["ratio_max"] == pytest.approx(1, abs=1e-5)
    assert metrics["mismatch_kl"] < 1e-9 and metrics["is_masked_frac"] == 0
    # π_old from the learner: the ratio is exactly 1, whatever the engine's log-probs were (here the base model's)
    learner = LoraPolicyTrainer(run_config(tiny_model_dir, tmp_path)).step(batch, 1)
    assert learner["ratio_min"] == learner["ratio_max"] == learner["ratio_mean"] == 1.0


def test_the_mismatch_weight_and_its_metrics_follow_the_engines_log_probs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Engine log-probs 1 nat below the learner's on one sequence: weight e > 2 there, truncated (tis) or masked."""
    cfg = run_config(tiny_model_dir, tmp_path, kl_beta=0.0)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm)
    off = batch.sequences[0]
    shifted = [lp - 1.0 if m else lp for lp, m in zip(off.behaviour_logprobs, off.assistant_mask, strict=True)]
    batch = batch.model_copy(
        update={"sequences": [off.model_copy(update={"behaviour_logprobs": shifted}), batch.sequences[1]]}
    )
    share = off.n_assistant_tokens / batch.n_assistant_tokens
    for correction in ("tis", "mis"):
        trainer = LoraPolicyTrainer(cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(
            update={"is_correction": correction})}))  # fmt: skip
        metrics = trainer.step(batch, 1)
        assert metrics["is_masked_frac"] == pytest.approx(share), correction
        # k3 of KL(engine || learner) with d = +1 nat on those tokens: e - 2; ~0 on the others
        assert metrics["mismatch_kl"] == pytest.approx(share * (math.e - 2), rel=1e-3), correction
        assert metrics["ratio_min"] == metrics["ratio_max"] == 1.0


def test_weight_delta_is_the_size_of_the_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(tiny_model_dir, tmp_path)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    before = lora_state(trainer)
    metrics = trainer.step(batch, 1)
    deltas = [(p - before[n]).flatten() for n, p in lora_state(trainer).items()]
    assert metrics["weight_delta_l2"] == pytest.approx(float(torch.cat(deltas).norm()), rel=1e-5)
    assert metrics["weight_delta_max"] == pytest.approx(float(torch.cat(deltas).abs().max()), rel=1e-5)


def test_resume_from_saved_state_repeats_the_next_step_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(tiny_model_dir, tmp_path).model_copy(update={"lora": LoraConfig(rank=8, alpha=16, dropout=0.1)})
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0, 0.5], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    trainer.step(batch, 1)
    trainer.save_state(tmp_path / "ckpt", 1)
    expected = trainer.step(batch, 2)
    expected_weights = lora_state(trainer)

    resumed = LoraPolicyTrainer(cfg.model_copy(update={"seed": 99}))
    resumed.load_state(tmp_path / "ckpt")
    assert resumed.at_step == 1
    got = resumed.step(batch, 2)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6) and got["kl"] == pytest.approx(expected["kl"])
    assert all(torch.allclose(expected_weights[n], p, atol=1e-7) for n, p in lora_state(resumed).items())


def test_an_incomplete_checkpoint_is_refused_and_an_empty_batch_only_moves_the_step(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    trainer = LoraPolicyTrainer(run_config(tiny_model_dir, tmp_path))
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match=r"state\.json"):
        trainer.load_state(tmp_path / "half")
    weights = lora_state(trainer)
    assert trainer.step(build_train_batch([], trainer.cfg.algorithm), 1) == {} and trainer.at_step == 1
    assert all(torch.equal(weights[n], p) for n, p in lora_state(trainer).items())


def test_calls_for_a_step_the_state_does_not_hold_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(tiny_model_dir, tmp_path)
    batch = fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm)
    trainer = LoraPolicyTrainer(cfg)
    with pytest.raises(StepMismatchError, match=r"step\(2\) needs the learner at step 1; its state is at step 0"):
        trainer.step(batch, 2)
    with pytest.raises(StepMismatchError, match=r"publish\(1\) needs the learner at step 1"):
        trainer.publish(1)  # step 1's update has not been applied: these are step 0's weights
    trainer.step(batch, 1)
    with pytest.raises(StepMismatchError, match=r"step\(1\) needs the learner at step 0"):
        trainer.step(batch, 1)  # applied twice
    with pytest.raises(StepMismatchError, match=r"save_state\(2\)"):
        trainer.save_state(tmp_path / "ckpt", 2)
    assert trainer.publish(1).version == 1
    trainer.save_state(tmp_path / "ckpt", 1)
    sft = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"warm_start": True})})
    with pytest.raises(StepMismatchError, match=r"publish\(0\) needs the learner at step 0; its state is at step -1"):
        LoraPolicyTrainer(sft).publish(0)  # a run with an SFT warm start has not had it yet


def test_a_published_adapter_is_a_starting_point_with_the_same_probe(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = run_config(tiny_model_dir, tmp_path)
    trainer = LoraPolicyTrainer(cfg)
    trainer.step(fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm), 1)
    trainer.step(fixed_batch(tiny_model_dir, [1.0, 0.0], cfg.algorithm), 2)
    ref = trainer.publish(2)
    assert Path(ref.path).name == "t-v2" and ref.rank == 8
    assert trainer.publish(2).probe == ref.probe  # republishing a version replaces it in place

    model = cfg.model.model_copy(update={"init_adapter": Path(ref.path)})
    started = LoraPolicyTrainer(cfg.model_copy(update={"model": model}))
    again = started.publish(0)
    assert again.probe.logprobs == pytest.approx(ref.probe.logprobs, abs=1e-5)
