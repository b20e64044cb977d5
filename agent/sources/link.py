"""Keeping a link to a device that comes and goes (gpsd, a USB serial sensor): reopening with
back-off while time moves on, and flagging a link that is open but has gone quiet."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from agent.config.source import SourceConfig
from agent.sources.base import OnIdle, failure_warning
from agent.sources.health import SourceHealth, rejected
from agent.sources.registry import ErrorAt

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


def check_device_source(config: SourceConfig, error: ErrorAt) -> None:
    """What a source of a device (a catalogue, no DBC) requires of its config."""
    if config.dbc:
        raise error("dbc", f"a {config.type} source has no DBC: its signals are listed in "
                    "docs/sensors.md")
    if config.strict:
        raise error("strict", f"a {config.type} source has no DBC to be strict about")
    if config.stale_after <= 0:
        raise error("stale_after", "must be positive (seconds without data before the "
                    "source is reported stale)")


def link_warnings(source: Mapping[str, Any]) -> list[str]:
    """The problems of a device source's status document (`connected`, `stale`, rejected
    input) in a field technician's words; its type may add its own."""
    found = failure_warning(source, device_name(source))
    if not source.get("connected"):
        found.append(f"{device_name(source)}: not connected ({source['reconnects']} attempts)")
    elif source.get("stale"):
        found.append(f"{device_name(source)}: no valid data for more than "
                     f"{source['stale_after_s']:.0f} s")
    return found


def rejected_warnings(source: Mapping[str, Any]) -> list[str]:
    counts = rejected(source)
    if not counts:
        return []
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
    return [f"{device_name(source)}: {sum(counts.values())} inputs rejected ({reasons})"]


def device_name(source: Mapping[str, Any]) -> str:
    return f"{source['type']} {source['name']} ({source['channel']})"
