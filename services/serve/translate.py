"""OpenAI requests to the policy server's GenerateRequests, and its GenerateResults back to OpenAI bodies and chunks.

Pure functions over a transformers tokenizer, so the wire format is tested without an engine. The policy server
renders chat messages with the model's chat template (the same path rollouts take) and returns token ids,
log-probs and the text cut before a matched stop string; this module only reshapes them. Streamed replies are the
pieces the engine yields as it samples (fieldkit.generation.GenerateDelta), whose texts join to exactly the
non-streamed text.
Log-probs are those of the raw model distribution (temperature 1), as everywhere in fieldkit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from fieldkit.generation import ChatMessage, GenerateDelta, GenerateRequest, GenerateResult
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


def _piece(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(
    tokenizer: Any, result: GenerateResult | GenerateDelta, start: int = 0, end: int | None = None
) -> dict[str, Any]:
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


def completion_logprobs(tokenizer: Any, result: GenerateResult | GenerateDelta, offset: int) -> dict[str, Any]:
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
    return _usage(prompt_tokens, sum(len(r.token_ids) for r in results))


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


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


async def chat_stream(
    meta: dict[str, Any],
    tokenizer: Any,
    choices: Sequence[AsyncIterator[GenerateDelta]],
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """chat.completion.chunk bodies as the pieces come: per choice a role chunk, a chunk per piece (the tokens
    sampled within one coalescing window), a finish chunk; then usage. Choices follow one another."""
    base = {**meta, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None
    prompt_tokens = completion_tokens = 0

    def chunk(index: int, delta: dict[str, Any], lp: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}]}

    for index, pieces in enumerate(choices):
        yield chunk(index, {"role": "assistant", "content": ""}, None, None)
        async for piece in pieces:
            if index == 0 and piece.prompt_token_ids is not None:
                prompt_tokens = len(piece.prompt_token_ids)
            completion_tokens += len(piece.token_ids)
            if piece.text or (logprobs and piece.token_ids):
                yield chunk(index, {"content": piece.text}, chat_logprobs(tokenizer, piece) if logprobs else None, None)
            if piece.finish_reason is not None:
                yield chunk(index, {}, None, piece.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}


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


async def text_stream(
    meta: dict[str, Any],
    tokenizer: Any,
    choices: Sequence[AsyncIterator[GenerateDelta]],
    prompt_texts: Sequence[str],
    n: int,
    echo: bool,
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    """text_completion chunks as the pieces come: per choice the echoed prompt, a chunk per piece, a finish chunk;
    then usage. Choice i answers prompt i // n."""
    base = {**meta, "object": "text_completion"}
    if include_usage:
        base["usage"] = None
    prompt_tokens = completion_tokens = 0

    def chunk(index: int, text: str, lp: dict[str, Any] | None, finish: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": index, "text": text, "logprobs": lp, "finish_reason": finish}]}

    for index, pieces in enumerate(choices):
        prefix = prompt_texts[index // n] if echo else ""
        if prefix:
            yield chunk(index, prefix, None, None)
        offset = len(prefix)  # text_offset of the next token, counted in token pieces as the whole body counts
        async for piece in pieces:
            if index % n == 0 and piece.prompt_token_ids is not None:
                prompt_tokens += len(piece.prompt_token_ids)
            completion_tokens += len(piece.token_ids)
            if piece.text or (logprobs and piece.token_ids):
                lp = None
                if logprobs:
                    lp = completion_logprobs(tokenizer, piece, offset)
                    offset += sum(len(token) for token in lp["tokens"])
                yield chunk(index, piece.text, lp, None)
            if piece.finish_reason is not None:
                yield chunk(index, "", None, piece.finish_reason)
    if include_usage:
        yield {**base, "choices": [], "usage": _usage(prompt_tokens, completion_tokens)}
