"""Liveness of the agent's loops: the systemd watchdog is fed only while every loop beats.

Each loop (a source, the uplink worker) calls `beat(name, allowance)` to say "I will beat
again within `allowance` seconds". The main thread pings the watchdog only when no loop is
overdue, so a hung sampler (which stops every source thread at its lock) trips systemd's
watchdog and gets the service restarted.
"""

from __future__ import annotations

import logging
import time

from agent.runtime.notify import Notifier

log = logging.getLogger(__name__)

DEFAULT_ALLOWANCE = 5.0


class Liveness:
    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}

    def beat(self, name: str, allowance: float = DEFAULT_ALLOWANCE) -> None:
        self._deadlines[name] = time.monotonic() + allowance

    def retire(self, name: str) -> None:
        """A loop that ended on purpose (a finished replay) is no longer watched."""
        self._deadlines.pop(name, None)

    def overdue(self) -> list[str]:
        now = time.monotonic()
        return [name for name, deadline in list(self._deadlines.items()) if deadline < now]


class WatchdogFeeder:
    """Called often from the main thread; pings systemd at half its interval while all is well."""

    def __init__(self, notifier: Notifier, liveness: Liveness) -> None:
        self._notifier = notifier
        self._liveness = liveness
        self._last_ping = 0.0
        self._complained = False

    def tick(self) -> None:
        interval = self._notifier.watchdog_interval
        if interval is None:
            return
        overdue = self._liveness.overdue()
        if overdue:
            if not self._complained:
                log.error("not feeding the watchdog: %s stopped responding", ", ".join(overdue))
                self._complained = True
            return
        self._complained = False
        if time.monotonic() - self._last_ping >= interval / 2:
            self._notifier.watchdog()
            self._last_ping = time.monotonic()
