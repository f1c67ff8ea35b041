"""Streamed replies: the policy's token streams, relayed as server-sent events while they are generated.

The replica's policy yields each choice's pieces as the engine samples them (`Policy.generate_stream`, in this
process); pieces that queue up while the client is slow to read are merged into one chunk. Each choice's first
piece is read before the HTTP response starts, so a request the policy refuses (unknown adapter, prompt too long)
is an ordinary OpenAI error status, not an error inside a 200 stream. When the client goes away, Serve cancels the
response and every stream still running is closed, which stops its request in the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from fastapi.responses import StreamingResponse

from fieldkit.generation import GenerateDelta, GenerateRequest
from services.serve.errors import cause_of

log = logging.getLogger(__name__)


class ChoiceStream:
    """One choice's pieces, in order; the first is read at open."""

    def __init__(self, pieces: AsyncGenerator[GenerateDelta, None], first: GenerateDelta) -> None:
        self._pieces = pieces
        self.first = first

    async def pieces(self) -> AsyncIterator[GenerateDelta]:
        yield self.first
        async for piece in self._pieces:
            yield piece

    async def close(self) -> None:
        await self._pieces.aclose()


async def open_streams(policy: Any, requests: Sequence[GenerateRequest], window_s: float) -> list[ChoiceStream]:
    """Start one stream per request and read each one's first piece (raising what the policy refused)."""
    streams = [policy.generate_stream(request, window_s) for request in requests]
    try:
        firsts = await asyncio.gather(*(anext(stream) for stream in streams))
    except BaseException:
        await asyncio.gather(*(stream.aclose() for stream in streams), return_exceptions=True)
        raise
    return [ChoiceStream(stream, first) for stream, first in zip(streams, firsts, strict=True)]


def sse_response(chunks: AsyncIterator[dict[str, Any]], streams: Sequence[ChoiceStream]) -> StreamingResponse:
    """Server-sent events, one per chunk as it is made, then [DONE]. A failure mid-stream becomes an OpenAI error
    event (the official clients raise it); a client that leaves cancels whatever still generates."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as exc:
            cause = cause_of(exc)
            log.warning("stream failed: %s: %s", type(cause).__name__, cause)
            error = {"message": f"the policy engine failed: {type(cause).__name__}", "type": "server_error"}
            yield f"data: {json.dumps({'error': {**error, 'param': None, 'code': 'engine_unavailable'}})}\n\n"
        finally:
            await asyncio.gather(*(stream.close() for stream in streams), return_exceptions=True)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
