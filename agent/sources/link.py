"""Keeping a link to a device that comes and goes (gpsd, a USB serial sensor): reopening with
back-off while time moves on, and flagging a link that is open but has gone quiet."""

from __future__ import annotations

import random
import threading
import time

from agent.sources.base import OnIdle
from agent.sources.health import SourceHealth

IDLE_BEAT = 0.25


class Backoff:
    """Exponential back-off with jitter between reopening attempts."""

    def __init__(self, minimum: float = 0.5, maximum: float = 5.0) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._delay = minimum

    def reset(self) -> None:
        self._delay = self.minimum

    def wait(self, on_idle: OnIdle, stop: threading.Event) -> None:
        """Wait the current delay (sampling goes on meanwhile), then double it."""
        deadline = time.monotonic() + self._delay * random.uniform(0.8, 1.2)
        self._delay = min(self._delay * 2, self.maximum)
        while not stop.is_set() and time.monotonic() < deadline:
            on_idle(time.time())
            stop.wait(min(IDLE_BEAT, max(0.0, deadline - time.monotonic())))


class Staleness:
    """Sets `stale` = 1 in the source's health when no valid reading came for `after` seconds
    (counting from the start, so a sensor that never speaks is stale too)."""

    def __init__(self, health: SourceHealth, after: float) -> None:
        self._health = health
        self._after = after
        self._last = time.monotonic()
        health.state["stale"] = 0

    def fresh(self) -> None:
        self._last = time.monotonic()
        self._health.state["stale"] = 0

    def check(self) -> None:
        if time.monotonic() - self._last > self._after:
            self._health.state["stale"] = 1
