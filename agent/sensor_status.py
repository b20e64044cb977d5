"""What the control socket answers about gpsd and serial sensor sources (`diag gps`,
`diag sensors`), and the problems with them in a field technician's words.

agent/runtime/status.py shows every source as a bus; this module adds what only value sources have:
fix state, GPS time against the system clock, rejected input by reason, and the latest
readings per wheel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.config.schema import SourceConfig
from agent.runtime import clock
from agent.sources.gpsd_json import FIX_NAMES
from agent.sources.sensor_protocols import WHEELS

if TYPE_CHECKING:
    from agent.runtime.daemon import Agent

CLOCK_DISAGREEMENT_WARNING = 2.0


def location(config: SourceConfig) -> str:
    """Where a value source reads from, as the user configured it."""
    if config.type == "gpsd":
        return f"{config.host}:{config.gpsd_port}"
    return f"{config.port} ({config.protocol}, {config.baudrate} baud)"


def gps(agent: Agent) -> dict[str, Any]:
    offset = clock.GPS_TIME.offset()
    document: dict[str, Any] = {
        "sources": [_gps_source(agent, config) for config in agent.config.sources
                    if config.type == "gpsd"],
        "clock": agent.batcher.clock(),
        "gps_minus_system_s": None if offset is None else round(offset, 3),
    }
    document["warnings"] = gps_warnings(document)
    return document


def sensors(agent: Agent) -> dict[str, Any]:
    document: dict[str, Any] = {
        "sources": [_sensor_source(agent, config) for config in agent.config.sources
                    if config.type == "serial"]}
    document["warnings"] = sensor_warnings(document)
    return document


def _common(agent: Agent, config: SourceConfig, now: float) -> dict[str, Any]:
    health = agent.healths[config.name]
    return {
        "name": config.name, "type": config.type, "channel": location(config),
        **health.counters(), "last_failure": health.last_failure or None,
        "stale_after_s": config.stale_after,
        "last_reading_age_s": None if not health.last_frame_time
        else round(now - health.last_frame_time, 1),
    }


def _readings(agent: Agent, name: str, now: float) -> dict[str, dict[str, Any]]:
    store = agent.stores.get(name)
    if store is None:
        return {}
    with agent.lock:
        values = store.current_values()
    return {planned.signal: {"value": raw * planned.scale + planned.offset,
                             "unit": planned.unit, "age_s": round(now - stamp, 1)}
            for planned, raw, stamp in values}


def _gps_source(agent: Agent, config: SourceConfig) -> dict[str, Any]:
    now = time.time()
    document = _common(agent, config, now)
    document.update(fix=FIX_NAMES.get(document.get("fix_mode", 0), "unknown"),
                    readings=_readings(agent, config.name, now))
    return document


def _sensor_source(agent: Agent, config: SourceConfig) -> dict[str, Any]:
    now = time.time()
    document = _common(agent, config, now)
    readings = _readings(agent, config.name, now)
    document["protocol"] = config.protocol
    document["wheels"] = {
        wheel: {quantity.split(".", 1)[1]: reading for quantity, reading in readings.items()
                if quantity.startswith(f"{wheel}.")} for wheel in WHEELS}
    return document


def rejected(source: Mapping[str, Any]) -> dict[str, int]:
    """Rejected input by reason, from a source document's `rejected.<reason>` counters."""
    return {key.split(".", 1)[1]: count for key, count in source.items()
            if key.startswith("rejected.")}


def failure_warning(source: Mapping[str, Any], name: str) -> list[str]:
    """Any source whose own code failed (a bug, not the device) and was restarted: said
    first, since it explains the source's other symptoms (also used by `diag status`)."""
    if not source["failures"]:
        return []
    return [f"{name}: failed {source['failures']} times with an unexpected error and was "
            f"restarted (last: {source['last_failure']}); see the agent's log and report it"]


def value_source_warnings(source: Mapping[str, Any]) -> list[str]:
    """Problems of a gpsd or serial source document (also used by `diag status`)."""
    name = f"{source['type']} {source['name']} ({source['channel']})"
    found = failure_warning(source, name)
    if not source.get("connected"):
        found.append(f"{name}: not connected ({source['reconnects']} attempts)")
    elif source.get("stale"):
        found.append(f"{name}: no valid data for more than {source['stale_after_s']:.0f} s")
    elif source["type"] == "gpsd" and source.get("fix_mode", 0) < 2:
        found.append(f"{name}: no fix ({FIX_NAMES.get(source.get('fix_mode', 0))}): sky "
                     "view, antenna, or a cold start under way")
    counts = rejected(source)
    if counts:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
        found.append(f"{name}: {sum(counts.values())} inputs rejected ({reasons})")
    return found


def gps_warnings(document: Mapping[str, Any]) -> list[str]:
    if not document["sources"]:
        return ["no gpsd source configured ([[sources]] type = \"gpsd\")"]
    found = [warning for source in document["sources"]
             for warning in value_source_warnings(source)]
    offset = document["gps_minus_system_s"]
    if offset is not None and abs(offset) > CLOCK_DISAGREEMENT_WARNING \
            and document["clock"] != clock.NTP:
        found.append(f"system clock is {offset:+.1f} s off GPS time and not synchronised "
                     "(batches are corrected from GPS; check the RTC and NTP)")
    return found


def sensor_warnings(document: Mapping[str, Any]) -> list[str]:
    if not document["sources"]:
        return ["no serial sensor source configured ([[sources]] type = \"serial\")"]
    return [warning for source in document["sources"]
            for warning in value_source_warnings(source)]
