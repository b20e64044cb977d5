"""Stops: standing still (speed at or below `stopped_below`) for at least `min_dwell`
seconds, reported when the car moves off again (speed above `moving_above` for
`depart_after` seconds) with arrival, departure and dwell time. Parking counts: a car that
stands overnight and drives off in the morning reports that stop then. A speed dropout (the
ECU asleep, a lost sensor) leaves the state as it was.
"""

from __future__ import annotations

from agent.config.schema import EventsConfig
from agent.events.model import Event, Readings


class StopDetector:
    name = "stop"

    def __init__(self, config: EventsConfig) -> None:
        self._speed = config.speed
        self._stop = config.stop
        self._depart_after_ms = round(config.stop.depart_after * 1000)
        self._stopped_since: int | None = None
        self._moving_since: int | None = None
        self._position: tuple[float, float] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self._speed,)

    @property
    def stopped_since(self) -> int | None:
        return self._stopped_since

    def step(self, now: Readings) -> list[Event]:
        speed = now.value(self._speed)
        if speed is None:
            return []
        if self._stopped_since is None:
            if speed <= self._stop.stopped_below:
                self._stopped_since = now.time_ms
                self._position = now.position()
            return []
        if speed <= self._stop.moving_above:
            self._moving_since = None
            if self._position is None:
                self._position = now.position()
            return []
        if self._moving_since is None:
            self._moving_since = now.time_ms
        if now.time_ms - self._moving_since < self._depart_after_ms:
            return []
        arrived, departed = self._stopped_since, self._moving_since
        self._stopped_since = self._moving_since = None
        dwell = (departed - arrived) / 1000
        if dwell < self._stop.min_dwell:
            return []
        positions = {"at": self._position} if self._position else {}
        return [Event("stop", departed, "driving",
                      {"arrived": arrived, "departed": departed, "dwell_s": round(dwell, 1)},
                      positions)]
