"""Location controls: privacy zones and reduced precision, on every path a position takes.

A position is a (latitude, longitude) pair in degrees from two configured signal keys, so it
works whichever source provides it (gpsd, a CAN navigation message). Inside a zone (a circle
or a polygon) a position is suppressed; elsewhere it is snapped to the centre of a grid cell
`precision_m` wide (0 keeps full precision). The same rules hold for telemetry
(TelemetryLocationFilter), event positions (`reveal`) and trigger captures
(`filter_captured`):

- a latitude or longitude sample without its partner at the same time cannot be judged and
  is dropped; statistics of position signals are always dropped (a mean of positions would
  say where the car was);
- with zones configured, any other `location`-class value (altitude, a navigation unit's
  date or heading, ...) is kept only at a time when the car's position is known and may
  itself be sent: inside a zone, or with no position to judge it by, it is withheld (without
  zones there is nothing to judge it against, and it is sent as it is; precision applies to
  the configured position only);
- with `tracks = false` no series of location values leaves (telemetry or captures); single
  event positions (trip ends, stops) still do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.config.schema import LocationConfig, ZoneConfig
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sampling.ring import Field, RingSlice

EARTH_RADIUS_M = 6_371_000.0
METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class Zone:
    name: str
    center: tuple[float, float] | None
    radius_m: float
    polygon: tuple[tuple[float, float], ...]

    @classmethod
    def from_config(cls, config: ZoneConfig) -> Zone:
        center = (config.center[0], config.center[1]) if config.center else None
        return cls(config.name, center, config.radius_m,
                   tuple((p[0], p[1]) for p in config.polygon))

    def contains(self, lat: float, lon: float) -> bool:
        if self.center is not None:
            return distance_m(self.center, (lat, lon)) <= self.radius_m
        return _in_polygon(lat, lon, self.polygon)


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def _in_polygon(lat: float, lon: float, corners: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting in the (lon, lat) plane: fine for zones of a few km."""
    inside = False
    for (lat1, lon1), (lat2, lon2) in zip(corners, (*corners[1:], corners[0]), strict=True):
        if (lat1 > lat) != (lat2 > lat):
            crossing = lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1)
            if lon < crossing:
                inside = not inside
    return inside


class LocationPolicy:
    """What may be said about a position."""

    def __init__(self, config: LocationConfig, zones: Sequence[ZoneConfig]) -> None:
        self.latitude = config.latitude
        self.longitude = config.longitude
        self.precision_m = config.precision_m
        self.tracks = config.tracks
        self.zones = tuple(Zone.from_config(zone) for zone in zones)

    def in_zone(self, lat: float, lon: float) -> bool:
        return any(zone.contains(lat, lon) for zone in self.zones)

    def reveal(self, lat: float, lon: float) -> tuple[float, float] | None:
        """The position as it may leave the vehicle, or None when the car or the snapped
        position that would be sent is inside a zone (snapping can move a point just outside
        a zone into it, so what is sent is checked, not only what was measured)."""
        if not (math.isfinite(lat) and math.isfinite(lon)) or self.in_zone(lat, lon):
            return None
        sent = self.snap(lat, lon)
        return None if self.in_zone(*sent) else sent

    def reveal_by_time(self, lat_at: Mapping[int, float], lon_at: Mapping[int, float]
                       ) -> dict[int, tuple[float, float] | None]:
        """For each time at which both coordinates are known, what may be sent (None:
        nothing). Times with one coordinate only are absent: they cannot be judged."""
        return {t: self.reveal(lat_at[t], lon_at[t]) for t in lat_at.keys() & lon_at.keys()}

    def filter_captured(self, samples: Mapping[str, Sequence[Sequence[float]]],
                        is_location: Callable[[str], bool]) -> tuple[dict[str, list[list[float]]],
                                                                     int]:
        """A trigger capture ({key: [[t, value], ...]}) as it may leave, and how many samples
        were withheld: positions paired by time, zone-checked and snapped; other location
        values, when there are zones, only where the position at their time may be sent;
        none with tracks off."""
        kept: dict[str, list[list[float]]] = {}
        withheld = 0
        located = {key: rows for key, rows in samples.items() if is_location(key)}
        revealed: dict[int, tuple[float, float] | None] = {}
        if self.tracks:
            revealed = self.reveal_by_time(
                {int(t): float(v) for t, v in located.get(self.latitude, ())},
                {int(t): float(v) for t, v in located.get(self.longitude, ())})
        for key, rows in samples.items():
            if key not in located:
                kept[key] = [list(row) for row in rows]
                continue
            if key not in (self.latitude, self.longitude) and self.tracks and not self.zones:
                kept[key] = [list(row) for row in rows]
                continue
            sent = []
            for t, value in rows:
                position = revealed.get(int(t))
                if position is None:
                    withheld += 1
                elif key == self.latitude:
                    sent.append([t, position[0]])
                elif key == self.longitude:
                    sent.append([t, position[1]])
                else:
                    sent.append([t, value])
            if sent:
                kept[key] = sent
        return kept, withheld

    def snap(self, lat: float, lon: float) -> tuple[float, float]:
        if self.precision_m <= 0:
            return lat, lon
        step_lat = self.precision_m / METRES_PER_DEGREE
        snapped_lat = (math.floor(lat / step_lat) + 0.5) * step_lat
        # Cells as wide in metres as they are high, at the snapped latitude (stable per row).
        width = max(math.cos(math.radians(snapped_lat)), 1e-6) * METRES_PER_DEGREE
        step_lon = self.precision_m / width
        return snapped_lat, (math.floor(lon / step_lon) + 0.5) * step_lon


class TelemetryLocationFilter:
    """Applies a LocationPolicy to the ring records of a window before they are encoded:
    the position signals and every other signal of `plan` that `is_location` names."""

    def __init__(self, policy: LocationPolicy, plan: SamplingPlan,
                 is_location: Callable[[str], bool]) -> None:
        self._policy = policy
        by_key = {s.key: s for s in plan.signals}
        self._lat = by_key.get(policy.latitude)
        self._lon = by_key.get(policy.longitude)
        # Other location values need judging only against zones (module docstring).
        self._located = [s.index for s in plan.signals if s in (self._lat, self._lon)
                         or (policy.zones and is_location(s.key))]

    @property
    def active(self) -> bool:
        return bool(self._located)

    def __call__(self, records: RingSlice) -> RingSlice:
        lat, lon = self._lat, self._lon
        if not self._located or not len(records.signal):
            return records
        is_located = np.isin(records.signal, self._located)
        if not is_located.any():
            return records
        keep = ~is_located
        value = records.value.copy()
        if lat is not None and lon is not None:
            revealed = self._policy.reveal_by_time(
                {t: _physical(lat, bits) for t, bits in _values_by_time(records, lat.index)},
                {t: _physical(lon, bits) for t, bits in _values_by_time(records, lon.index)})
            for row in np.flatnonzero(is_located & (records.field == Field.VALUE)).tolist():
                position = revealed.get(int(records.time_ms[row]))
                if position is None:
                    continue
                signal = int(records.signal[row])
                if signal == lat.index:
                    value[row] = _raw(lat, position[0])
                elif signal == lon.index:
                    value[row] = _raw(lon, position[1])
                keep[row] = True
        return RingSlice(records.time_ms[keep], records.signal[keep], records.field[keep],
                         value[keep])


def _values_by_time(records: RingSlice, index: int) -> list[tuple[int, int]]:
    rows = (records.signal == index) & (records.field == Field.VALUE)
    return list(zip(records.time_ms[rows].tolist(), records.value[rows].tolist(), strict=True))


def _physical(signal: PlannedSignal, bits: int) -> float:
    if signal.is_float:
        return float(np.int64(bits).view(np.float64))
    return bits * signal.scale + signal.offset


def _raw(signal: PlannedSignal, physical: float) -> int:
    if signal.is_float:
        return int(np.float64(physical).view(np.int64))
    return round((physical - signal.offset) / signal.scale)
