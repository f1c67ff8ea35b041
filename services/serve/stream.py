"""Streamed replies: the policy server's token streams, relayed as server-sent events while they are generated.

A replica has one reader of its policy server's streams (StreamMux): a single loop fetches every ready piece of
every open stream in one call (`PolicyServer.read_streams`) and hands each to its stream, so 50 concurrent streams
cost one Ray message per read rather than one per piece. A stream whose reader falls behind gets its waiting
pieces merged into one chunk. Each choice's first piece is read before the HTTP response starts, so a request the
policy server refuses (unknown adapter, prompt too long) is an ordinary OpenAI error status, not an error inside
a 200 stream. When the client goes away, Serve cancels the response; its streams still running are cancelled,
which stops their requests in the engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi.responses import StreamingResponse

from fieldkit.generation import GenerateDelta, GenerateRequest, merge_deltas
from services.serve.errors import cause_of

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 5.0  # a read with nothing to hand out returns after this long (the loop then reads again)


class PolicyStream:
    """One choice's pieces, in order; the first is read at open."""

    def __init__(self, mux: StreamMux, stream_id: str) -> None:
        self._mux = mux
        self.id = stream_id
        self.queue: asyncio.Queue[GenerateDelta | BaseException] = asyncio.Queue()
        self.first: GenerateDelta | None = None
        self.done = False

    async def _next(self) -> GenerateDelta:
        """The next piece, merged with any that are already waiting."""
        ready = [await self.queue.get()]
        while not self.queue.empty() and isinstance(ready[-1], GenerateDelta) and ready[-1].finish_reason is None:
            ready.append(self.queue.get_nowait())
        failure = next((item for item in ready if isinstance(item, BaseException)), None)
        if failure is not None:
            self.done = True
            raise failure
        piece = merge_deltas(ready)  # type: ignore[arg-type]  # no exceptions left in it
        self.done = piece.finish_reason is not None
        return piece

    async def pieces(self) -> AsyncIterator[GenerateDelta]:
        assert self.first is not None
        yield self.first
        while not self.done:
            yield await self._next()

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._mux.cancel([self.id])


class StreamMux:
    """The replica's one reader of its policy server's streams."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self._reader = f"replica-{uuid.uuid4().hex}"
        self._open: dict[str, PolicyStream] = {}
        self._loop: asyncio.Task[None] | None = None

    async def open(self, requests: Sequence[GenerateRequest], window_s: float) -> list[PolicyStream]:
        """Start one stream per request and read each one's first piece (raising what the policy server refused)."""
        streams = [PolicyStream(self, uuid.uuid4().hex) for _ in requests]
        for stream in streams:  # registered first: the loop may hand out a piece before open_streams returns
            self._open[stream.id] = stream
        try:
            by_id = {stream.id: request for stream, request in zip(streams, requests, strict=True)}
            await self._policy.open_streams.remote(self._reader, by_id, window_s)
            if self._loop is None or self._loop.done():
                self._loop = asyncio.create_task(self._read())
            for stream in streams:
                stream.first = await stream._next()
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return streams

    def cancel(self, stream_ids: list[str]) -> None:
        for sid in stream_ids:
            self._open.pop(sid, None)
        self._policy.cancel_streams.remote(stream_ids)  # fire and forget: nothing waits for the engine to stop

    async def _read(self) -> None:
        while self._open:
            try:
                items = await self._policy.read_streams.remote(self._reader, READ_TIMEOUT_S)
            except Exception as exc:  # the policy server is gone: every open stream ends with why
                for stream in list(self._open.values()):
                    stream.queue.put_nowait(exc)
                self._open.clear()
                return
            for sid, item in items:
                reader = self._open.get(sid)
                if reader is None:
                    continue  # cancelled meanwhile
                reader.queue.put_nowait(item)
                if isinstance(item, Exception) or item.finish_reason is not None:
                    del self._open[sid]


def sse_response(chunks: AsyncIterator[dict[str, Any]], streams: Sequence[PolicyStream]) -> StreamingResponse:
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
            for stream in streams:
                stream.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
