"""OpenAI requests to the policy server's GenerateRequests, and its GenerateResults back to OpenAI bodies and chunks.

Pure functions over a transformers tokenizer, so the wire format is tested without an engine. The policy server
renders chat messages with the model's chat template (the same path rollouts take) and returns token ids,
log-probs and the text cut before a matched stop string; this module only reshapes them. Stream deltas are slices
of that final text at token boundaries, so the streamed pieces always join to exactly the non-streamed text.
Log-probs are those of the raw model distribution (temperature 1), as everywhere in fieldkit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fieldkit.generation import ChatMessage, GenerateRequest, GenerateResult
from services.serve.schema import ChatCompletionRequest, ChatMessageIn, CompletionRequest, Sampling


def _sampling(request: Sampling, choice: int, max_tokens: int, adapter: str | None, top: int) -> dict[str, Any]:
    return {
        "max_tokens": max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop_list,
        # Choices of one request differ, yet a seeded request repeats exactly.
        "seed": None if request.seed is None else request.seed + choice,
        "adapter": adapter,
        "top_logprobs": top,
    }


def chat_messages(messages: Sequence[ChatMessageIn]) -> list[ChatMessage]:
    """OpenAI messages as the policy server takes them: `developer` is the newer name of `system`."""
    return [ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text()) for m in messages]


def chat_generate_requests(
    request: ChatCompletionRequest, adapter: str | None, max_model_len: int
) -> list[GenerateRequest]:
    messages = chat_messages(request.messages)
    top = request.top_logprobs or 0
    limit = request.token_limit or max_model_len  # the server cuts it to the room the prompt leaves
    return [GenerateRequest(messages=messages, **_sampling(request, i, limit, adapter, top)) for i in range(request.n)]


def completion_generate_requests(
    request: CompletionRequest, prompt_ids: Sequence[list[int]], adapter: str | None
) -> list[GenerateRequest]:
    """n requests per prompt, prompt-major: choice index = prompt index * n + i, as OpenAI numbers them."""
    top = request.logprobs or 0
    return [
        GenerateRequest(prompt_token_ids=ids, **_sampling(request, i, request.max_tokens, adapter, top))
        for ids in prompt_ids
        for i in range(request.n)
    ]


def text_deltas(tokenizer: Any, token_ids: Sequence[int], text: str) -> list[str]:
    """One piece of `text` per token, joining to exactly `text`.

    Boundaries come from incremental detokenisation (a token that ends inside a multi-byte character adds nothing
    until the character completes); text past a stop string's cut is never emitted.
    """
    deltas: list[str] = []
    prefix_offset = read_offset = 0
    covered = 0
    for i in range(len(token_ids)):
        before = tokenizer.decode(token_ids[prefix_offset:read_offset], skip_special_tokens=True)
        after = tokenizer.decode(token_ids[prefix_offset : i + 1], skip_special_tokens=True)
        grown = 0
        if len(after) > len(before) and not after.endswith("\ufffd"):
            grown = len(after) - len(before)
            prefix_offset, read_offset = read_offset, i + 1
        start, covered = covered, min(len(text), covered + grown)
        deltas.append(text[start:covered])
    if deltas:
        deltas[-1] += text[covered:]
    return deltas


def _piece(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer: Any, result: GenerateResult, start: int = 0, end: int | None = None) -> dict[str, Any]:
    """The `logprobs` of a chat choice for tokens [start, end): token, logprob, bytes, top_logprobs."""
    content = []
    end = len(result.token_ids) if end is None else end
    for i in range(start, end):
        piece = _piece(tokenizer, result.token_ids[i])
        top = (result.top_logprobs or [{}] * len(result.token_ids))[i]
        content.append(
            {
                "token": piece,
                "logprob": result.logprobs[i],
                "bytes": list(piece.encode()),
                "top_logprobs": [
                    {"token": p, "logprob": lp, "bytes": list(p.encode())}
                    for p, lp in ((_piece(tokenizer, t), lp) for t, lp in top.items())
                ],
            }
        )
    return {"content": content}


def completion_logprobs(tokenizer: Any, result: GenerateResult, offset: int) -> dict[str, Any]:
    """The legacy completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset (from `offset`)."""
    tokens = [_piece(tokenizer, t) for t in result.token_ids]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    top = None
    if result.top_logprobs is not None:
        top = [{_piece(tokenizer, t): lp for t, lp in row.items()} for row in result.top_logprobs]
    return {"tokens": tokens, "token_logprobs": list(result.logprobs), "top_logprobs": top, "text_offset": offsets}


def usage(prompt_tokens: int, results: Sequence[GenerateResult]) -> dict[str, int]:
    completion = sum(len(r.token_ids) for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def chat_completion(
    meta: dict[str, Any], tokenizer: Any, results: Sequence[GenerateResult], logprobs: bool
) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": r.text},
            "logprobs": chat_logprobs(tokenizer, r) if logprobs else None,
            "finish_reason": r.finish_reason,
        }
        for i, r in enumerate(results)
    ]
    prompt_tokens = len(results[0].prompt_token_ids)
    return {**meta, "object": "chat.completion", "choices": choices, "usage": usage(prompt_tokens, results)}


def chat_chunks(
    meta: dict[str, Any], tokenizer: Any, results: Sequence[GenerateResult], logprobs: bool, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """chat.completion.chunk bodies: per choice a role chunk, one chunk per token, a finish chunk; then usage."""
    base = {**meta, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], lp: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}]}

    for index, result in enumerate(results):
        yield chunk(index, {"role": "assistant", "content": ""}, None, None)
        for t, piece in enumerate(text_deltas(tokenizer, result.token_ids, result.text)):
            lp = chat_logprobs(tokenizer, result, t, t + 1) if logprobs else None
            yield chunk(index, {"content": piece}, lp, None)
        yield chunk(index, {}, None, result.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": usage(len(results[0].prompt_token_ids), results)}


def text_completion(
    meta: dict[str, Any],
    tokenizer: Any,
    results: Sequence[GenerateResult],
    prompt_texts: Sequence[str],
    n: int,
    echo: bool,
    logprobs: bool,
) -> dict[str, Any]:
    choices = []
    for i, r in enumerate(results):
        prefix = prompt_texts[i // n] if echo else ""
        choices.append(
            {
                "index": i,
                "text": prefix + r.text,
                "logprobs": completion_logprobs(tokenizer, r, len(prefix)) if logprobs else None,
                "finish_reason": r.finish_reason,
            }
        )
    prompt_tokens = sum(len(r.prompt_token_ids) for r in results[::n])
    return {**meta, "object": "text_completion", "choices": choices, "usage": usage(prompt_tokens, results)}


def text_chunks(
    meta: dict[str, Any],
    tokenizer: Any,
    results: Sequence[GenerateResult],
    prompt_texts: Sequence[str],
    n: int,
    echo: bool,
    logprobs: bool,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    base = {**meta, "object": "text_completion"}
    if include_usage:
        base["usage"] = None

    def chunk(index: int, text: str, lp: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "text": text, "logprobs": lp, "finish_reason": finish}]}

    for index, result in enumerate(results):
        prefix = prompt_texts[index // n] if echo else ""
        if prefix:
            yield chunk(index, prefix, None, None)
        offset = len(prefix)
        for t, piece in enumerate(text_deltas(tokenizer, result.token_ids, result.text)):
            lp = None
            if logprobs:
                one = result.model_copy(
                    update={
                        "token_ids": result.token_ids[t : t + 1],
                        "logprobs": result.logprobs[t : t + 1],
                        "top_logprobs": None if result.top_logprobs is None else result.top_logprobs[t : t + 1],
                    }
                )
                lp = completion_logprobs(tokenizer, one, offset)
            offset += len(piece)
            yield chunk(index, piece, lp, None)
        yield chunk(index, "", None, result.finish_reason)
    if include_usage:
        prompt_tokens = sum(len(r.prompt_token_ids) for r in results[::n])
        yield {**base, "choices": [], "usage": usage(prompt_tokens, results)}
