"""Battery health (EV): cell voltage spread, module temperature out of range, and state of
charge falling while the car is parked (not in a trip and not charging).

Each condition goes through a Latch (agent/events/latch.py): it must hold for `hold` seconds
to fire, clears only below its threshold less `hysteresis` (a fraction), and fires at most
once per `min_interval`. The SoC drop is measured from the SoC when parking began (the trip
detector says when), and resets when the car drives or charges (SoC rising).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config.schema import EventsConfig
from agent.events.latch import Latch
from agent.events.model import Event, Readings


class BatteryDetector:
    name = "battery"

    def __init__(self, config: EventsConfig, parked: Callable[[], bool]) -> None:
        self._config = config.battery
        self._parked = parked
        battery = config.battery
        self._latches = {name: Latch(battery.hold, battery.min_interval)
                         for name in ("cell_spread", "temperature_high", "temperature_low",
                                      "soc_drop_parked")}
        self._parked_soc: float | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        battery = self._config
        return (battery.cell_spread, battery.max_temperature, battery.min_temperature,
                battery.soc)

    def step(self, now: Readings) -> list[Event]:
        battery = self._config
        relax = 1 - battery.hysteresis
        events = []
        spread = now.value(battery.cell_spread)
        events += self._check("cell_spread", now, spread, battery.spread_max_mv,
                              battery.spread_max_mv * relax, above=True,
                              data={"spread_mv": spread, "limit_mv": battery.spread_max_mv},
                              signal=battery.cell_spread)
        high = now.value(battery.max_temperature)
        events += self._check("temperature_high", now, high, battery.temperature_max,
                              battery.temperature_max - abs(battery.temperature_max) * (1 - relax),
                              above=True, data={"temperature_c": high,
                                                "limit_c": battery.temperature_max},
                              signal=battery.max_temperature)
        low = now.value(battery.min_temperature)
        events += self._check("temperature_low", now, low, battery.temperature_min,
                              battery.temperature_min + abs(battery.temperature_min) * (1 - relax),
                              above=False, data={"temperature_c": low,
                                                 "limit_c": battery.temperature_min},
                              signal=battery.min_temperature)
        events += self._soc(now)
        return events

    def _check(self, name: str, now: Readings, value: float | None, limit: float,
               clear: float, *, above: bool, data: dict[str, object],
               signal: str) -> list[Event]:
        latch = self._latches[name]
        if value is None:
            condition = None
        elif above:
            condition = value > limit or (latch.active and value > clear)
        else:
            condition = value < limit or (latch.active and value < clear)
        if latch.update(now.time_ms, condition):
            return [Event("battery", now.time_ms, "technical", {"condition": name, **data},
                          signals=(signal,))]
        return []

    def _soc(self, now: Readings) -> list[Event]:
        battery = self._config
        soc = now.value(battery.soc)
        if soc is None:
            return []
        if not self._parked() or (self._parked_soc is not None and soc > self._parked_soc):
            self._parked_soc = soc if self._parked() else None
            self._latches["soc_drop_parked"].update(now.time_ms, False)
            return []
        if self._parked_soc is None:
            self._parked_soc = soc
        drop = self._parked_soc - soc
        if self._latches["soc_drop_parked"].update(now.time_ms, drop >= battery.soc_drop_parked):
            return [Event("battery", now.time_ms, "technical", {
                "condition": "soc_drop_parked", "soc_at_parking": self._parked_soc,
                "soc": soc, "drop": round(drop, 2)}, signals=(battery.soc,))]
        return []
