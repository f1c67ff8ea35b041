"""Streamed replies: the policy server's token stream, relayed as server-sent events while it is generated.

Each choice is one `PolicyServer.generate_stream` call (a Ray streaming generator of coalesced pieces). Its first
piece is read before the HTTP response starts, so a request the policy server refuses (unknown adapter, prompt too
long) is still an ordinary OpenAI error status, not an error inside a 200 stream. After that, pieces become SSE
events as they arrive. When the client goes away, Serve cancels the response; every stream still running is then
cancelled, which stops its request in the engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import ray
from fastapi.responses import StreamingResponse

from fieldkit.generation import GenerateDelta, GenerateRequest

log = logging.getLogger(__name__)


class PolicyStream:
    """One choice's pieces, the first already read."""

    def __init__(self, refs: Any, first: GenerateDelta) -> None:
        self._refs = refs
        self.first = first
        self.done = first.finish_reason is not None

    async def pieces(self) -> AsyncIterator[GenerateDelta]:
        yield self.first
        while not self.done:
            piece: GenerateDelta = await (await self._refs.__anext__())
            self.done = piece.finish_reason is not None
            yield piece

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            ray.cancel(self._refs)


async def open_stream(policy: Any, request: GenerateRequest, window_s: float) -> PolicyStream:
    """Start one streamed generation and read its first piece (raising what the policy server refused)."""
    # Not retried: a retry after a restart would send the pieces already sent again.
    refs = policy.generate_stream.options(max_task_retries=0).remote(request, window_s)
    try:
        first = await (await refs.__anext__())
    except BaseException:
        ray.cancel(refs)
        raise
    return PolicyStream(refs, first)


def sse_response(chunks: AsyncIterator[dict[str, Any]], streams: Sequence[PolicyStream]) -> StreamingResponse:
    """Server-sent events, one per chunk as it is made, then [DONE]. A failure mid-stream becomes an OpenAI error
    event (the official clients raise it); a client that leaves cancels whatever still generates."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as exc:
            from services.serve.app import cause_of

            cause = cause_of(exc)
            log.warning("stream failed: %s: %s", type(cause).__name__, cause)
            error = {"message": f"the policy engine failed: {type(cause).__name__}", "type": "server_error"}
            yield f"data: {json.dumps({'error': {**error, 'param': None, 'code': 'engine_unavailable'}})}\n\n"
        finally:
            for stream in streams:
                stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
