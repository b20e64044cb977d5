"""Load change during a stop: did the car leave heavier or lighter than it arrived?

Ride heights sink and tire pressures rise under load. The detector compares the same sensors
at the same spot: the median of each over `window` seconds once the car has settled
(`settle` seconds after it stopped) against the median over the last `window` seconds before
it moved off (leaving out the last `guard` seconds, when the driver already selects a gear).
Comparing the car with itself where it stands makes the result independent of a slope, of
sensor offsets and of the load it already carried; medians ignore noise and spikes; missing
samples (dropouts) are skipped, and fewer than `min_samples` on either side means no verdict.
Tire pressures are compared at equal temperature (ideal gas, when tire temperatures are
known), so tires cooling during a long stop do not look like a lighter car.

The verdict: `loaded` when the mean height change sinks by `height_threshold_mm` or the mean
pressure change rises by `pressure_threshold_kpa` (and the other does not say the opposite),
`unloaded` the other way round, nothing otherwise.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence

from agent.config.schema import EventsConfig
from agent.events.model import Event, Readings

ATMOSPHERE_KPA = 101.325
KELVIN = 273.15


class LoadChangeDetector:
    name = "load"

    def __init__(self, config: EventsConfig, available: frozenset[str]) -> None:
        self._speed = config.speed
        self._stop = config.stop
        self._load = config.load
        self._heights = tuple(k for k in config.load.heights if k in available)
        self._pressures = tuple(k for k in config.load.pressures if k in available)
        temperatures = dict(zip(config.load.pressures, config.load.tire_temperatures,
                                strict=False))
        self._temperature = {p: t for p, t in temperatures.items() if t in available}
        self._settle_ms = round(config.load.settle * 1000)
        self._window_ms = round(config.load.window * 1000)
        self._guard_ms = round(config.load.guard * 1000)
        self._stopped_since: int | None = None
        self._arrival: list[dict[str, float]] = []
        self._recent: deque[tuple[int, dict[str, float]]] = deque()
        self._moving_since: int | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        load = self._load
        return (self._speed, *load.heights, *load.pressures, *load.tire_temperatures)

    @property
    def usable(self) -> bool:
        return bool(self._heights or self._pressures)

    def step(self, now: Readings) -> list[Event]:
        speed = now.value(self._speed)
        if speed is None:
            return []
        t = now.time_ms
        if self._stopped_since is None:
            if speed <= self._stop.stopped_below:
                self._stopped_since = t
                self._arrival, self._moving_since = [], None
                self._recent.clear()
            return []
        if speed <= self._stop.moving_above:
            self._moving_since = None
            sample = self._sample(now)
            settled = t - self._stopped_since
            if self._settle_ms <= settled < self._settle_ms + self._window_ms:
                self._arrival.append(sample)
            self._recent.append((t, sample))
            while self._recent and self._recent[0][0] < t - self._window_ms - self._guard_ms:
                self._recent.popleft()
            return []
        if self._moving_since is None:
            self._moving_since = t
        if t - self._moving_since < round(self._stop.depart_after * 1000):
            return []
        arrived, departed = self._stopped_since, self._moving_since
        self._stopped_since = None
        if (departed - arrived) / 1000 < self._stop.min_dwell:
            return []
        before = [s for at, s in self._recent if at < departed - self._guard_ms]
        return self._verdict(arrived, departed, self._arrival, before)

    def _sample(self, now: Readings) -> dict[str, float]:
        sample = {}
        for key in self._heights:
            value = now.value(key)
            if value is not None:
                sample[key] = value
        for key in self._pressures:
            value = now.value(key)
            if value is None:
                continue
            temperature_key = self._temperature.get(key)
            if temperature_key is None:
                sample[key] = value
                continue
            temperature = now.value(temperature_key)
            if temperature is None:  # a compensated series takes no uncompensated sample
                continue
            # Absolute pressure over absolute temperature: constant for a tire of fixed load.
            sample[key] = (value + ATMOSPHERE_KPA) / (temperature + KELVIN)
            sample[f"{key}@T"] = temperature
        return sample

    def _verdict(self, arrived: int, departed: int, first: Sequence[dict[str, float]],
                 last: Sequence[dict[str, float]]) -> list[Event]:
        heights = self._changes(self._heights, first, last)
        pressures = {}
        for key in self._pressures:
            change = _median_change(key, first, last, self._load.min_samples)
            if change is None:
                continue
            if key in self._temperature:
                # Back to kPa at the departure temperature.
                temperature = statistics.median(s[f"{key}@T"] for s in last if f"{key}@T" in s)
                change *= temperature + KELVIN
            pressures[key] = change
        if not heights and not pressures:
            return []
        sink = -statistics.fmean(heights.values()) if heights else 0.0
        rise = statistics.fmean(pressures.values()) if pressures else 0.0
        by_height = _sign(sink, self._load.height_threshold_mm)
        by_pressure = _sign(rise, self._load.pressure_threshold_kpa)
        if by_height * by_pressure < 0 or by_height + by_pressure == 0:
            return []
        direction = "loaded" if by_height + by_pressure > 0 else "unloaded"
        return [Event("load_change", departed, "driving", {
            "direction": direction,
            "arrived": arrived,
            "departed": departed,
            "height_change_mm": round(-sink, 1) if heights else None,
            "pressure_change_kpa": round(rise, 1) if pressures else None,
            "changes": {key: round(v, 1) for key, v in {**heights, **pressures}.items()},
        }, signals=(*heights, *pressures))]

    def _changes(self, keys: Sequence[str], first: Sequence[dict[str, float]],
                 last: Sequence[dict[str, float]]) -> dict[str, float]:
        changes = {}
        for key in keys:
            change = _median_change(key, first, last, self._load.min_samples)
            if change is not None:
                changes[key] = change
        return changes


def _median_change(key: str, first: Sequence[dict[str, float]],
                   last: Sequence[dict[str, float]], min_samples: int) -> float | None:
    a = [s[key] for s in first if key in s]
    b = [s[key] for s in last if key in s]
    if len(a) < min_samples or len(b) < min_samples:
        return None
    return statistics.median(b) - statistics.median(a)


def _sign(value: float, threshold: float) -> int:
    return 1 if value >= threshold else -1 if value <= -threshold else 0
