"""Per-token log-probs: alignment with the tokens they score, padding, and the continuation helper."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_logprob_at_t_scores_token_t_given_the_prefix(model) -> None:
    from fieldkit.training.logprobs import token_logprobs

    ids_bt = torch.tensor([[11, 42, 7, 99, 300]])
    with torch.no_grad():
        logp_bt, entropy_bt = token_logprobs(model, ids_bt, with_entropy=True)
        # the same number from a forward pass on the prefix alone
        prefix_logits_v = model(input_ids=ids_bt[:, :3]).logits[0, -1].float()
    expected = torch.log_softmax(prefix_logits_v, -1)[99]
    assert logp_bt[0, 0] == 0
    assert logp_bt[0, 3].item() == pytest.approx(expected.item(), abs=1e-4)
    probs_v = prefix_logits_v.softmax(-1)
    assert entropy_bt[0, 3].item() == pytest.approx(-(probs_v * probs_v.log()).sum().item(), abs=1e-3)


def test_a_token_is_scored_at_its_own_sampling_temperature(model) -> None:
    from fieldkit.training.logprobs import token_logprobs

    ids_bt = torch.tensor([[11, 42, 7, 99]])
    temperature_bt = torch.tensor([[1.0, 1.0, 0.4, 2.0]])  # token 2 sampled at T 0.4, token 3 at T 2
    with torch.no_grad():
        logp_bt, entropy_bt = token_logprobs(model, ids_bt, temperature_bt=temperature_bt, with_entropy=True)
        logits_tv = model(input_ids=ids_bt).logits[0].float()
    tempered_2 = torch.log_softmax(logits_tv[1] / 0.4, -1)
    assert logp_bt[0, 2].item() == pytest.approx(tempered_2[7].item(), abs=1e-4)
    assert logp_bt[0, 3].item() == pytest.approx(torch.log_softmax(logits_tv[2] / 2.0, -1)[99].item(), abs=1e-4)
    assert logp_bt[0, 1].item() == pytest.approx(torch.log_softmax(logits_tv[0], -1)[42].item(), abs=1e-4)
    assert entropy_bt[0, 2].item() == pytest.approx(-(tempered_2.exp() * tempered_2).sum().item(), abs=1e-3)


def test_right_padding_scores_zero_and_leaves_real_tokens_unchanged(model) -> None:
    from fieldkit.training.logprobs import token_logprobs

    ids_bt = torch.tensor([[11, 42, 7, 99], [11, 42, 0, 0]])
    mask_bt = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        logp_bt, _ = token_logprobs(model, ids_bt, mask_bt)
    assert logp_bt[1, 2:].abs().sum() == 0
    assert logp_bt[1, 1].item() == pytest.approx(logp_bt[0, 1].item(), abs=1e-5)
    assert (logp_bt[0, 1:] < 0).all()


def test_continuation_logprobs_match_the_full_sequence(model) -> None:
    from fieldkit.training.logprobs import continuation_logprobs, token_logprobs

    with torch.no_grad():
        full_bt, _ = token_logprobs(model, torch.tensor([[11, 42, 7, 99, 300]]))
    assert continuation_logprobs(model, [11, 42], [7, 99, 300]) == pytest.approx(full_bt[0, 2:].tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="continuation_ids"):
        continuation_logprobs(model, [11], [])
