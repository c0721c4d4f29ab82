"""How many sandboxes of a template were asked for: the peak over recent minutes, so a pool
sized by it is ready for the next burst like the last one, not only for the last seconds."""

from __future__ import annotations

import collections
import time


class Demand:
    """Claims counted per second; `peak` is the most claims in any `window_s` within the
    last `horizon_s` (so a burst keeps the pool deep for `horizon_s`, then it shrinks)."""

    def __init__(self, window_s: float, horizon_s: float) -> None:
        self._window = max(1, int(window_s))
        self._horizon = max(self._window, int(horizon_s))
        self._per_second: collections.deque[list[int]] = collections.deque()  # [second, claims]

    def claim(self, now: float | None = None) -> None:
        second = int(time.monotonic() if now is None else now)
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1])

    def peak(self, now: float | None = None) -> int:
        current = int(time.monotonic() if now is None else now)
        while self._per_second and self._per_second[0][0] <= current - self._horizon:
            self._per_second.popleft()
        best = in_window = 0
        start = 0
        seconds = list(self._per_second)
        for second, claims in seconds:
            in_window += claims
            while seconds[start][0] <= second - self._window:
                in_window -= seconds[start][1]
                start += 1
            best = max(best, in_window)
        return best
