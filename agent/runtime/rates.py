"""Frames per second of each source, for diagnostics, from counters sampled about once a second."""

from __future__ import annotations

import time
from collections.abc import Mapping


class FrameRates:
    """Rates between the two latest `update`s; the daemon's main loop calls it each second."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self._rates: dict[str, float] = {}

    def update(self, frames: Mapping[str, int]) -> None:
        now = time.monotonic()
        for name, count in frames.items():
            previous = self._last.get(name)
            if previous is not None and now > previous[0]:
                self._rates[name] = (count - previous[1]) / (now - previous[0])
            self._last[name] = (now, count)

    def stats(self) -> dict[str, float]:
        return dict(self._rates)
