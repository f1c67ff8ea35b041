"""Load figures of the policy server over a sliding window: requests in flight, tokens/s, busy fraction.

Plain Python with an injectable clock, so the arithmetic is testable; the server exports the figures as Ray gauges.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class ServerStats:
    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.in_flight = 0
        self.tokens_total = 0
        self.cancelled = 0  # streams whose reader left before the end
        self._tokens: deque[tuple[float, int]] = deque()  # (finish time, generated tokens)
        self._busy: deque[tuple[float, float]] = deque()  # closed (start, end) intervals with >= 1 request
        self._busy_since: float | None = None

    def started(self) -> None:
        if self.in_flight == 0:
            self._busy_since = self.clock()
        self.in_flight += 1

    def finished(self, tokens: int) -> None:
        now = self.clock()
        self.in_flight -= 1
        self.tokens_total += tokens
        self._tokens.append((now, tokens))
        if self.in_flight == 0 and self._busy_since is not None:
            self._busy.append((self._busy_since, now))
            self._busy_since = None
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window_s
        while self._tokens and self._tokens[0][0] < horizon:
            self._tokens.popleft()
        while self._busy and self._busy[0][1] < horizon:
            self._busy.popleft()

    def tokens_per_s(self) -> float:
        now = self.clock()
        self._trim(now)
        return sum(n for _, n in self._tokens) / self.window_s

    def busy_fraction(self) -> float:
        now = self.clock()
        self._trim(now)
        horizon = now - self.window_s
        spans = list(self._busy) + ([(self._busy_since, now)] if self._busy_since is not None else [])
        busy = sum(end - max(start, horizon) for start, end in spans)
        return min(1.0, busy / self.window_s)
