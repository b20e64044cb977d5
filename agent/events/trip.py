"""Trips: from ignition on to ignition off, each held long enough to be believed.

Without an ignition signal (not in any source) a trip is movement instead: speed above the
stop detector's `moving_above` starts it, standing still for `end_after` ends it. The summary
at the end: duration, distance (odometer difference, else integrated speed), energy (pack
voltage times current integrated over the trip; positive is energy used), top and mean speed,
start and end position when known.
"""

from __future__ import annotations

from agent.config.schema import EventsConfig
from agent.events.model import Event, Readings

# Gaps longer than this (a dropout) are not integrated: no made-up distance or energy.
MAX_STEP_MS = 5_000


class TripDetector:
    name = "trip"

    def __init__(self, config: EventsConfig, available: frozenset[str]) -> None:
        self._config = config
        self._trip = config.trip
        self._use_ignition = config.ignition in available
        self._on_values = frozenset(config.ignition_on)
        self._start_after_ms = round(self._trip.start_after * 1000)
        self._end_after_ms = round(self._trip.end_after * 1000)
        self._candidate: tuple[bool, int] | None = None  # (running?, since)
        self.active = False
        self._reset(0)

    @property
    def inputs(self) -> tuple[str, ...]:
        trip = self._trip
        return (self._config.ignition, self._config.speed, trip.odometer, trip.pack_voltage,
                trip.pack_current)

    def _reset(self, time_ms: int) -> None:
        self._start_ms = time_ms
        self._start_odometer: float | None = None
        self._last_odometer: float | None = None
        self._integrated_m = 0.0
        self._energy_j = 0.0
        self._top_speed = 0.0
        self._last_ms: int | None = None
        self._start_position: tuple[float, float] | None = None
        self._last_position: tuple[float, float] | None = None

    def _running(self, now: Readings) -> bool | None:
        if self._use_ignition:
            label = now.label(self._config.ignition)
            return None if label is None else label in self._on_values
        speed = now.value(self._config.speed)
        if speed is None:
            return None
        return speed > self._config.stop.moving_above if not self.active else speed > 0.0

    def step(self, now: Readings) -> list[Event]:
        running = self._running(now)
        events: list[Event] = []
        if running is not None and (self._candidate is None or self._candidate[0] != running):
            self._candidate = (running, now.time_ms)
            if running and not self.active:
                self._reset(now.time_ms)  # count from the first moment, confirmed or not
        if self.active or (self._candidate is not None and self._candidate[0]):
            self._accumulate(now)
        if running is None or self._candidate is None:
            return events
        held = now.time_ms - self._candidate[1]
        if not self.active and running and held >= self._start_after_ms:
            self.active = True
            positions = {"start": self._start_position} if self._start_position else {}
            events.append(Event("trip_start", self._start_ms, "driving", {}, positions))
        elif self.active and not running and held >= self._end_after_ms:
            self.active = False
            events.append(self._summary(self._candidate[1]))
        return events

    def _accumulate(self, now: Readings) -> None:
        trip = self._trip
        odometer = now.value(trip.odometer)
        if odometer is not None:
            if self._start_odometer is None:
                self._start_odometer = odometer
            self._last_odometer = odometer
        speed = now.value(self._config.speed)
        position = now.position()
        if position is not None:
            self._start_position = self._start_position or position
            self._last_position = position
        if self._last_ms is not None:
            dt = (now.time_ms - self._last_ms) / 1000
            if 0 < dt * 1000 <= MAX_STEP_MS:
                if speed is not None:
                    self._integrated_m += speed / 3.6 * dt
                voltage, current = now.value(trip.pack_voltage), now.value(trip.pack_current)
                if voltage is not None and current is not None:
                    self._energy_j += voltage * current * dt
        if speed is not None:
            self._top_speed = max(self._top_speed, speed)
        self._last_ms = now.time_ms

    def _summary(self, end_ms: int) -> Event:
        duration = (end_ms - self._start_ms) / 1000
        if self._start_odometer is not None and self._last_odometer is not None:
            distance_km = self._last_odometer - self._start_odometer
            distance_source = "odometer"
        else:
            distance_km = self._integrated_m / 1000
            distance_source = "speed"
        positions = {name: p for name, p in (("start", self._start_position),
                                             ("end", self._last_position)) if p is not None}
        return Event("trip_end", end_ms, "driving", {
            "start": self._start_ms,
            "duration_s": round(duration, 1),
            "distance_km": round(distance_km, 3),
            "distance_source": distance_source,
            "energy_kwh": round(self._energy_j / 3.6e6, 3),
            "top_speed_kmh": round(self._top_speed, 1),
            "mean_speed_kmh": round(distance_km / duration * 3600, 1) if duration > 0 else 0.0,
        }, positions)
