"""How a `bounded` series is read back: straight lines between its points (docs/sampling.md).

Shared by the verify tool and the tests, which hold the agent's points against every frame.
Points come in time order; several points at one millisecond are a vertical step, and at that
time the curve takes every value between them. Before the first point and after the last
there is no curve.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


class Curve:
    """A piecewise-linear curve through (time ms, value) points in time order."""

    def __init__(self, times: Sequence[int], values: Sequence[float]) -> None:
        self._times = list(times)
        self._values = list(values)

    def distance(self, t: int, v: float) -> float | None:
        """How far `v` lies from the curve at time `t`; None where there is no curve."""
        times, values = self._times, self._values
        first = bisect.bisect_left(times, t)
        last = bisect.bisect_right(times, t)
        if first < last:  # points at t itself: the step between their values
            here = values[first:last]
            low, high = min(here), max(here)
            return 0.0 if low <= v <= high else min(abs(v - low), abs(v - high))
        if first == 0 or first == len(times):
            return None
        t0, t1 = times[first - 1], times[first]
        v0, v1 = values[first - 1], values[first]
        return abs(v0 + (v1 - v0) * ((t - t0) / (t1 - t0)) - v)
