"""The adapter probe: proof that the engine serves the weights the learner trained.

The learner scores a fixed token sequence (teacher-forced) with the adapter it is about to publish and ships those
log-probs inside the AdapterRef. After hot-loading, the policy server scores the same tokens through its engine and
refuses the version when the two disagree beyond a bf16 tolerance. The comparison also scores the base model, so a
check that could not tell the adapter from no adapter at all (an adapter still close to zero) says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fieldkit.generation import ProbeCheck
from fieldkit.training.records import AdapterProbe

# A turn of the agent protocol: what the policy reads and writes, so the probe exercises the adapted projections on
# the kind of tokens training moves.
PROBE_MESSAGES = [
    {"role": "system", "content": "You are a shell agent. Reply with one ```bash block holding one command."},
    {"role": "user", "content": "Move draft.md into posts/ and list the directory."},
]
PROBE_REPLY = "```bash\nmkdir -p posts && mv draft.md posts/draft.md && ls -la posts\n```"


def probe_sequence(tokenizer: Any) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) of the standard probe, rendered with the model's chat template."""
    prompt = tokenizer.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    continuation = tokenizer(PROBE_REPLY, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        continuation = [*continuation, tokenizer.eos_token_id]
    return list(prompt["input_ids"]), list(continuation)


def build_probe(model: Any, prompt_ids: list[int], continuation_ids: list[int]) -> AdapterProbe:
    """Teacher-forced log-probs of the continuation under `model` (a transformers or PEFT causal LM, adapter active)."""
    from fieldkit.training.logprobs import continuation_logprobs

    logprobs = continuation_logprobs(model, prompt_ids, continuation_ids)
    return AdapterProbe(prompt_token_ids=prompt_ids, continuation_token_ids=continuation_ids, logprobs=logprobs)


def check_probe(
    probe: AdapterProbe, engine_logprobs: Sequence[float], base_logprobs: Sequence[float], tolerance: float
) -> ProbeCheck:
    """Compare the engine's log-probs of the probe (adapter on, and off) with the learner's."""
    expected = probe.logprobs
    if len(engine_logprobs) != len(expected) or len(base_logprobs) != len(expected):
        raise ValueError(
            f"probe has {len(expected)} log-probs; the engine returned {len(engine_logprobs)} with the adapter "
            f"and {len(base_logprobs)} without"
        )
    diffs = [abs(a - b) for a, b in zip(engine_logprobs, expected, strict=True)]
    base_mean = sum(abs(a - b) for a, b in zip(base_logprobs, expected, strict=True)) / len(expected)
    mean = sum(diffs) / len(diffs)
    return ProbeCheck(
        mean_abs_diff=mean,
        max_abs_diff=max(diffs),
        tolerance=tolerance,
        passed=mean <= tolerance,
        base_mean_abs_diff=base_mean,
        distinguishable_from_base=base_mean > tolerance,
    )
