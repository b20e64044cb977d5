"""A condition that must hold for a while to fire, and then rests: no storm from a flapping
signal. It fires when the condition has been true for `hold` seconds, re-arms only after it
has been false for `hold` seconds again, and never fires twice within `min_interval`."""

from __future__ import annotations


class Latch:
    def __init__(self, hold: float, min_interval: float) -> None:
        self._hold_ms = round(hold * 1000)
        self._min_interval_ms = round(min_interval * 1000)
        self._since: int | None = None  # when the condition last changed to its current state
        self._state = False
        self._armed = True
        self._last_fired: int | None = None
        self.suppressed = 0

    @property
    def active(self) -> bool:
        return not self._armed

    def update(self, time_ms: int, condition: bool | None) -> bool:
        """Feed one observation (None: unknown, changes nothing); True when it fires."""
        if condition is None:
            return False
        if condition != self._state or self._since is None:
            self._state, self._since = condition, time_ms
        held = time_ms - self._since >= self._hold_ms
        if not condition:
            if held:
                self._armed = True
            return False
        if not (held and self._armed):
            return False
        self._armed = False
        if self._last_fired is not None and time_ms - self._last_fired < self._min_interval_ms:
            self.suppressed += 1
            return False
        self._last_fired = time_ms
        return True
