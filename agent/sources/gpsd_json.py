"""gpsd's JSON reports (TPV, SKY) → the `gps.*` quantities, as pure functions.

gpsd speaks newline-terminated JSON objects after `?WATCH={"enable":true,"json":true};`.
A TPV (time-position-velocity) report carries `mode` (0 unknown, 1 no fix, 2 2D, 3 3D) and,
with a fix, lat/lon/speed/track (and altitude only for a 3D fix); a SKY report carries DOPs
and the satellites. Without a fix no position is reported: the quantities are withdrawn so the
last known position is never sampled as if it were current.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from agent.sources.catalogue import Catalogue, CatalogueSignal
from agent.sources.sensor_protocols import Rejected

MAX_REPORT = 64 * 1024  # a SKY report with every constellation stays far below this
FIX_NAMES = {0: "unknown", 1: "no fix", 2: "2D", 3: "3D"}

GPS_CATALOGUE: Catalogue = (
    CatalogueSignal("lat", "deg", is_float=True),
    CatalogueSignal("lon", "deg", is_float=True),
    CatalogueSignal("alt", "m", is_float=True),
    CatalogueSignal("speed", "m/s", is_float=True),
    CatalogueSignal("track", "deg", is_float=True),
    CatalogueSignal("mode", "", choices=FIX_NAMES),
    CatalogueSignal("hdop", "", is_float=True),
    CatalogueSignal("sats", ""),
)
POSITION = ("lat", "lon", "alt", "speed", "track")
_LIMITS = {"lat": (-90.0, 90.0), "lon": (-180.0, 180.0), "alt": (-1000.0, 100_000.0),
           "speed": (0.0, 1000.0), "track": (0.0, 360.0), "hdop": (0.0, 100.0)}


@dataclass(frozen=True)
class GpsUpdate:
    """What one report says: quantity values (None: withdrawn), and GPS time with a fix."""

    values: tuple[tuple[str, float | None], ...]
    fix_mode: int | None = None
    gps_time: float | None = None


def parse_report(line: bytes) -> GpsUpdate | Rejected | None:
    """One line from gpsd; None for reports that carry nothing sampled (VERSION, DEVICES...).

    Any input whatever gives one of the three: a line gpsd should never send is `Rejected`
    with a reason, never an exception (the source would lose its connection over it)."""
    if len(line) > MAX_REPORT:
        return Rejected("too_long")
    try:
        report = json.loads(line)
    except (ValueError, RecursionError):
        return Rejected("bad_json")
    if not isinstance(report, dict) or not isinstance(report.get("class"), str):
        return Rejected("malformed")
    if report["class"] == "TPV":
        return _tpv(report)
    if report["class"] == "SKY":
        return _sky(report)
    return None


def _number(report: dict[str, object], key: str) -> float | None:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: beyond every limit, not absent
        return math.inf if value > 0 else -math.inf


def _tpv(report: dict[str, object]) -> GpsUpdate | Rejected:
    mode = report.get("mode", 0)
    if isinstance(mode, bool) or not isinstance(mode, int) or mode not in FIX_NAMES:
        return Rejected("malformed")
    if mode < 2 or _number(report, "lat") is None or _number(report, "lon") is None:
        # gpsd leaves out what it does not know (a first 2D report may have no position yet)
        return GpsUpdate((("mode", mode), *((name, None) for name in POSITION)), fix_mode=mode)
    altitude = "altMSL" if "altMSL" in report else "alt"
    values: dict[str, float | None] = {
        "lat": _number(report, "lat"), "lon": _number(report, "lon"),
        "alt": _number(report, altitude) if mode == 3 else None,
        "speed": _number(report, "speed"), "track": _number(report, "track")}
    for name, value in values.items():
        if value is not None and not (math.isfinite(value)
                                      and _LIMITS[name][0] <= value <= _LIMITS[name][1]):
            return Rejected("out_of_range")
    return GpsUpdate((("mode", mode), *values.items()), fix_mode=mode,
                     gps_time=_time(report.get("time")))


def _sky(report: dict[str, object]) -> GpsUpdate | Rejected:
    values: list[tuple[str, float | None]] = []
    hdop = _number(report, "hdop")
    if hdop is not None:
        if not (math.isfinite(hdop) and _LIMITS["hdop"][0] <= hdop <= _LIMITS["hdop"][1]):
            return Rejected("out_of_range")
        values.append(("hdop", hdop))
    used = _number(report, "uSat")
    satellites = report.get("satellites")
    if used is None and isinstance(satellites, list):
        used = float(sum(1 for s in satellites if isinstance(s, dict) and s.get("used") is True))
    if used is not None:
        if not (math.isfinite(used) and 0 <= used <= 1000):
            return Rejected("out_of_range")
        values.append(("sats", used))
    return GpsUpdate(tuple(values))


def _time(value: object) -> float | None:
    """gpsd's ISO 8601 UTC time ("2026-11-23T07:04:57.000Z") as seconds since the epoch."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None
