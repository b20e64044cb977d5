"""Readings of non-CAN sources (gpsd, serial sensors) and the store the sampler reads them from.

A CAN source is described by its DBC; a value source declares a catalogue instead
(agent/sources/catalogue.py). Its signals are keyed `<source>.<quantity>` (`gps.lat`,
`tpms.FL.pressure`).

A `ValueStore` is to a value source what a `FrameStore` is to a CAN bus: it keeps the newest
reading of every planned quantity and running statistics, and the sampler reads it through the
same `sample_last` / `take_stats` calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

from agent.decoding.frames import (
    Emit,
    EmitStats,
    EventClock,
    FrameObserver,
    StatsAccumulator,
    StoreStats,
)
from agent.sampling.frame_time import FRAME_TIME_MODES
from agent.sampling.plan import PlannedSignal
from agent.sources.base import Reading
from agent.sources.health import SourceHealth


class ValueStore:
    """The newest raw value of every planned quantity of one value source, and its stats."""

    def __init__(self, signals: Sequence[PlannedSignal], health: SourceHealth,
                 observer: FrameObserver | None = None) -> None:
        self.health = health
        self._observer = observer
        self._signals = tuple(signals)
        self._planned = {s.signal: s for s in signals}
        self._last_by_period: dict[int, tuple[PlannedSignal, ...]] = {}
        for planned in signals:
            if planned.mode == "last":
                self._last_by_period[planned.period_ms] = (
                    *self._last_by_period.get(planned.period_ms, ()), planned)
        self._latest: dict[int, tuple[float, int | float]] = {}
        self._stats = StatsAccumulator()

    def can_filters(self) -> list[dict[str, int | bool]]:
        return []

    def stats(self) -> StoreStats:
        return StoreStats(filters=(), unknown_ids=())

    def accept_all(self, readings: Sequence[Reading], clock: EventClock) -> None:
        """`accept` each reading after moving event time to it."""
        for reading in readings:
            clock.advance(reading.timestamp)
            self.accept(reading)

    def accept(self, reading: Reading) -> None:
        """Keep a reading if the plan needs it; count it either way."""
        planned = self._planned.get(reading.quantity)
        if reading.value is None:
            if planned is not None:
                self._latest.pop(planned.index, None)
            return
        health = self.health
        health.frames += 1
        health.last_frame_time = reading.timestamp
        health.last_received = time.monotonic()
        if planned is None:
            health.ignored += 1
            return
        if not math.isfinite(reading.value):
            health.reject("not_finite")
            return
        raw = _to_raw(planned, reading.value)
        self._latest[planned.index] = (reading.timestamp, raw)
        if planned.mode == "stats":
            self._stats.add(planned.index, raw)
        elif planned.mode in FRAME_TIME_MODES and self._observer is not None:
            self._observer.observe(planned.index, int(reading.timestamp * 1000), raw)

    def sample_last(self, period_ms: int, at: float, stale_after: float, emit: Emit) -> None:
        latest = self._latest
        for planned in self._last_by_period.get(period_ms, ()):
            value = latest.get(planned.index)
            if value is not None and at - value[0] <= stale_after:
                emit(planned.index, value[1])

    def take_stats(self, indices: Iterable[int], emit: EmitStats) -> None:
        self._stats.take(indices, emit)

    def current_values(self) -> list[tuple[PlannedSignal, int | float, float]]:
        """(signal, raw value, reading timestamp) of every planned quantity received so far."""
        return [(planned, self._latest[planned.index][1], self._latest[planned.index][0])
                for planned in self._signals if planned.index in self._latest]


def _to_raw(planned: PlannedSignal, value: float) -> int | float:
    if planned.is_float:
        return float(value)
    return round((value - planned.offset) / planned.scale)
