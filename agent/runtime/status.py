"""What the control socket answers: snapshots of the running agent turned into JSON-ready documents.

Every part of the data path offers `stats()`, a frozen snapshot taken without stopping it; the
daemon gathers them into one `AgentSnapshot` (and the latest readings, which it copies under
its own lock). This module only reads those values, so no diagnostic takes the pipeline's lock
or reads a part's private state. The field technician's wording of problems ("warnings") is
decided here, except each source type's own, which its module words (agent/sources/).

Ages are never negative and never mix clocks. A source's last frame is as old as the time since
it arrived (the monotonic clock). A signal's value is older by how far its frame's timestamp
lies behind the source's newest frame: a difference of event times, so a replay of a drive
recorded last year (or stamped in the future) reads the ages of its own timeline, not -1945 s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from agent.config.schema import AgentConfig
from agent.decoding.frames import StoreStats
from agent.events.engine import EngineStats
from agent.events.sink import EventDelivery
from agent.output.batch import BatcherStats
from agent.output.spool import SpoolStats
from agent.output.uplink import UplinkStats
from agent.privacy.consent import Consent
from agent.runtime import clock
from agent.sampling.plan import PlannedSignal
from agent.sampling.ring import RingStats
from agent.sources import registry
from agent.sources.gpsd_json import FIX_NAMES
from agent.sources.health import SourceStats
from agent.sources.sensor_protocols import WHEELS

OFFLINE_WARNING_AFTER = 120.0
CLOCK_DISAGREEMENT_WARNING = 2.0

# (signal, raw value, its frame's timestamp), as a store's `current_values()`.
LatestValue = tuple[PlannedSignal, int | float, float]


@dataclass(frozen=True)
class PrivacyStats:
    consent: Consent
    signals_sent: int
    signals_planned: int  # sent, and kept on the vehicle for events
    dropped_on_downgrade: int
    events: EngineStats
    delivery: EventDelivery


@dataclass(frozen=True)
class AgentSnapshot:
    """The running agent at one instant, as the parts report themselves."""

    config: AgentConfig
    boot: bytes
    uptime_s: float
    last_update: Mapping[str, Any] | None  # the latest config update's ack
    sources: tuple[SourceStats, ...]
    frame_rates: Mapping[str, float]
    stores: Mapping[str, StoreStats]
    ring: RingStats
    batches: BatcherStats
    spool: SpoolStats
    spool_max_bytes: int
    uplink: UplinkStats
    privacy: PrivacyStats
    fetch: Mapping[str, Any] | None = None  # fetch requests accepted, rejected by reason


def status(snapshot: AgentSnapshot) -> dict[str, Any]:
    now = time.time()
    config, ring, spool, uplink = snapshot.config, snapshot.ring, snapshot.spool, snapshot.uplink
    document = {
        "vehicle": config.vehicle.id,
        "boot": snapshot.boot.hex(),
        "uptime_s": round(snapshot.uptime_s, 1),
        "config": {"path": str(config.path), "version": config.version,
                   "last_update": snapshot.last_update},
        "fetch": snapshot.fetch,
        "clock": snapshot.batches.clock,
        "sources": [_source_status(snapshot, source) for source in snapshot.sources],
        "ring": {"capacity": ring.capacity, "written": ring.written,
                 "fill": round(min(ring.written, ring.capacity) / ring.capacity, 3),
                 "lookback_s": round(ring.span_ms / 1000, 1),
                 "lost": snapshot.batches.ring_lost},
        "batches": {"sealed": snapshot.batches.sealed, "quiet": snapshot.batches.quiet,
                    "window_s": config.batch.window,
                    "signals": snapshot.batches.signals},
        "spool": {"depth": spool.depth, "bytes": spool.bytes,
                  "max_bytes": snapshot.spool_max_bytes,
                  "oldest_age_s": None if spool.oldest_created is None
                  else _since(now, spool.oldest_created),
                  "evicted": spool.evicted, "not_kept": spool.not_kept,
                  "moved_aside": spool.moved_aside},
        "uplink": {"connected": uplink.connected, "host": config.uplink.host,
                   "port": config.uplink.port, "tls": config.uplink.tls,
                   "published": uplink.published, "acked": uplink.acked,
                   "dropped": uplink.dropped, "connect_failures": uplink.connect_failures,
                   "refused": uplink.refused,
                   "last_puback_age_s": None if not uplink.last_puback
                   else _since(now, uplink.last_puback)},
    }
    document["privacy"] = privacy(snapshot)
    document["warnings"] = warnings(document)
    return document


def privacy(snapshot: AgentSnapshot) -> dict[str, Any]:
    """The consent in force and what it keeps on the vehicle (and the events found)."""
    stats = snapshot.privacy
    consent = stats.consent
    settings = snapshot.config.privacy
    delivery = stats.delivery
    return {
        "consent": consent.level, "version": consent.version, "decided_by": consent.source,
        "classes_allowed": sorted(consent.allowed),
        "signals_sent": stats.signals_sent,
        "signals_kept_local": stats.signals_planned - stats.signals_sent,
        "position": {"signals": [settings.location.latitude, settings.location.longitude],
                     "precision_m": settings.location.precision_m,
                     "tracks": settings.location.tracks,
                     "zones": [zone.name for zone in settings.zones]},
        "pseudonym": settings.pseudonym.enabled,
        "dropped_on_downgrade": stats.dropped_on_downgrade,
        "events": {"detectors": list(stats.events.detectors),
                   "found": dict(stats.events.found), "sent": delivery.sent,
                   "withheld": dict(delivery.withheld),
                   "positions_withheld": delivery.positions_withheld,
                   "samples_withheld": delivery.samples_withheld},
    }


def _source_status(snapshot: AgentSnapshot, source: SourceStats) -> dict[str, Any]:
    return {"name": source.name, "type": source.type, "channel": source.where,
            "frames_per_s": round(snapshot.frame_rates.get(source.name, 0.0), 1),
            **source.counters, "last_failure": source.last_failure or None,
            "stale_after_s": source.stale_after,
            "last_frame_age_s": _age(source), "finished": source.finished}


def _age(source: SourceStats) -> float | None:
    """Seconds since the source's newest frame arrived; None before the first."""
    if not source.last_received:
        return None
    return round(max(0.0, time.monotonic() - source.last_received), 1)


def _value_age(source: SourceStats | None, stamp: float) -> float:
    """The age of a value whose frame was stamped `stamp` by `source`: how far that frame lies
    behind the source's newest one in the source's own time, plus the newest one's age."""
    if source is None or not source.last_received:
        return 0.0
    behind = max(0.0, source.last_frame_time - stamp)
    return behind + max(0.0, time.monotonic() - source.last_received)


def _since(now: float, then: float) -> float:
    return round(max(0.0, now - then), 1)


def warnings(document: Mapping[str, Any]) -> list[str]:
    """Problems in the words a field technician would use."""
    found = [warning for source in document["sources"]
             for warning in registry.warnings(source)]
    uplink = document["uplink"]
    if not uplink["connected"]:
        found.append(f"not connected to {uplink['host']}:{uplink['port']} "
                     f"({uplink['connect_failures']} failed attempts): data waits in the spool")
    if uplink["refused"]:
        found.append(f"the broker refused {uplink['refused']} batches (its ACL for this "
                     "vehicle?): they wait in the spool")
    spool = document["spool"]
    if spool["evicted"]:
        found.append(f"spool was full: {spool['evicted']} oldest batches dropped")
    if spool["not_kept"]:
        found.append(f"disk full: {spool['not_kept']} batches could not be written")
    if spool["oldest_age_s"] and spool["oldest_age_s"] > OFFLINE_WARNING_AFTER:
        found.append(f"oldest unsent batch is {spool['oldest_age_s'] / 60:.0f} min old")
    if document["ring"]["lost"]:
        found.append(f"ring buffer overran: {document['ring']['lost']} samples lost "
                     "(raise [ring] memory_mb)")
    if document["clock"] == clock.RTC:
        found.append("system clock not synchronised (no NTP/GPS): timestamps may be off")
    return found


def signal_values(readings: Mapping[str, Sequence[LatestValue]], sources: Sequence[SourceStats],
                  pattern: str = "*") -> list[dict[str, Any]]:
    """The current value of every signal whose key matches `pattern`, with or without its
    source prefix: `can0.ESP_*.*` and `ESP_*` both find can0's ESP messages."""
    by_name = {source.name: source for source in sources}
    rows = []
    for name, values in readings.items():
        for planned, raw, stamp in values:
            unprefixed = planned.key.split(".", 1)[-1]
            if not (fnmatchcase(planned.key, pattern) or fnmatchcase(unprefixed, pattern)):
                continue
            value = raw * planned.scale + planned.offset
            label = planned.choices.get(int(raw)) if planned.choices else None
            rows.append({"signal": planned.key, "value": value, "raw": raw,
                         "unit": planned.unit, "label": label,
                         "age_s": round(_value_age(by_name.get(name), stamp), 2),
                         "mode": planned.mode})
    return rows


def buses(snapshot: AgentSnapshot, top: int = 10) -> list[dict[str, Any]]:
    documents = []
    for source in snapshot.sources:
        store = snapshot.stores[source.name]
        documents.append({
            **_source_status(snapshot, source),
            "filters": [f"0x{frame_id:X}" for frame_id in store.filters],
            "unknown_ids": [{"id": f"0x{frame_id:X}", "frames": count}
                            for frame_id, count in store.unknown_ids[:top]],
        })
    return documents


# `diag gps` and `diag sensors`: what only value sources have (fix state, GPS time against
# the system clock, the latest readings per wheel).

def gps(snapshot: AgentSnapshot, readings: Mapping[str, Sequence[LatestValue]]) -> dict[str, Any]:
    offset = clock.GPS_TIME.offset()
    sources = []
    for source in snapshot.sources:
        if source.type == "gpsd":
            document = _value_source(source)
            sources.append({**document,
                            "fix": FIX_NAMES.get(document.get("fix_mode", 0), "unknown"),
                            "readings": _readings(source, readings.get(source.name, ()))})
    document: dict[str, Any] = {
        "sources": sources,
        "clock": snapshot.batches.clock,
        "gps_minus_system_s": None if offset is None else round(offset, 3),
    }
    document["warnings"] = gps_warnings(document)
    return document


def sensors(snapshot: AgentSnapshot,
            readings: Mapping[str, Sequence[LatestValue]]) -> dict[str, Any]:
    # By type name, not by config class: the serial type's module (and pyserial) is imported
    # only by a config that names it (agent/sources/registry.py).
    protocols = {config.name: config.protocol for config in snapshot.config.sources
                 if config.type == "serial"}
    sources = []
    for source in snapshot.sources:
        if source.name in protocols:
            values = _readings(source, readings.get(source.name, ()))
            sources.append({
                **_value_source(source), "protocol": protocols[source.name],
                "wheels": {wheel: {quantity.split(".", 1)[1]: reading
                                   for quantity, reading in values.items()
                                   if quantity.startswith(f"{wheel}.")} for wheel in WHEELS}})
    document: dict[str, Any] = {"sources": sources}
    document["warnings"] = sensor_warnings(document)
    return document


def _value_source(source: SourceStats) -> dict[str, Any]:
    return {"name": source.name, "type": source.type, "channel": source.where,
            **source.counters, "last_failure": source.last_failure or None,
            "stale_after_s": source.stale_after, "last_reading_age_s": _age(source)}


def _readings(source: SourceStats,
              readings: Sequence[LatestValue]) -> dict[str, dict[str, Any]]:
    return {planned.signal: {"value": raw * planned.scale + planned.offset,
                             "unit": planned.unit,
                             "age_s": round(_value_age(source, stamp), 1)}
            for planned, raw, stamp in readings}


def gps_warnings(document: Mapping[str, Any]) -> list[str]:
    if not document["sources"]:
        return ["no gpsd source configured ([[sources]] type = \"gpsd\")"]
    found = [warning for source in document["sources"]
             for warning in registry.warnings(source)]
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
            for warning in registry.warnings(source)]
