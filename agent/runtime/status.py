"""What the control socket answers: the agent's state as plain JSON-ready values.

Everything here reads the running agent and turns it into the documents that `edge-agent
diag` shows; the field tech's wording of problems ("warnings") is decided here, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from agent.config.schema import VALUE_SOURCE_TYPES
from agent.runtime import clock
from agent.sensor_status import failure_warning, location, value_source_warnings

if TYPE_CHECKING:
    from agent.runtime.daemon import Agent

SILENT_BUS_AFTER = 10.0
OFFLINE_WARNING_AFTER = 120.0


class FrameRates:
    """Frames per second of each source, from counters sampled about once a second."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}
        self.rates: dict[str, float] = {}

    def update(self, frames: Mapping[str, int]) -> None:
        now = time.monotonic()
        for name, count in frames.items():
            previous = self._last.get(name)
            if previous is not None and now > previous[0]:
                self.rates[name] = (count - previous[1]) / (now - previous[0])
            self._last[name] = (now, count)


def status(agent: Agent) -> dict[str, Any]:
    now = time.time()
    sources = [_source_status(agent, source.name, now) for source in agent.sources]
    spool = agent.spool.stats()
    uplink = agent.uplink.health
    ring = agent.ring
    document = {
        "vehicle": agent.config.vehicle.id,
        "boot": agent.boot.hex(),
        "uptime_s": round(time.monotonic() - agent.started, 1),
        "config": {"path": str(agent.config.path), "version": agent.config.version,
                   "last_update": agent.updater.last_outcome},
        "clock": agent.batcher.clock(),
        "sources": sources,
        "ring": {"capacity": ring.capacity, "written": ring.written,
                 "fill": round(min(ring.written, ring.capacity) / ring.capacity, 3),
                 "lost": agent.batcher.ring_lost + ring.lost_since(agent.batcher.cursor)},
        "batches": {"sealed": agent.batcher.next_seq, "window_s": agent.config.batch.window,
                    "signals": len(agent.batcher.dictionary)},
        "spool": {"depth": spool.depth, "bytes": spool.bytes, "max_bytes": agent.spool.max_bytes,
                  "oldest_age_s": None if spool.oldest_created is None
                  else round(now - spool.oldest_created, 1),
                  "evicted": spool.evicted, "not_kept": spool.not_kept,
                  "moved_aside": spool.moved_aside},
        "uplink": {"connected": uplink.connected, "host": agent.config.uplink.host,
                   "port": agent.config.uplink.port, "tls": agent.config.uplink.tls,
                   "published": uplink.published, "acked": uplink.acked,
                   "dropped": uplink.dropped, "connect_failures": uplink.connect_failures,
                   "refused": uplink.refused,
                   "last_puback_age_s": None if not uplink.last_puback
                   else round(now - uplink.last_puback, 1)},
    }
    document["privacy"] = privacy(agent)
    document["warnings"] = warnings(document)
    return document


def privacy(agent: Agent) -> dict[str, Any]:
    """The consent in force and what it keeps on the vehicle (and the events found)."""
    pipeline = agent.pipeline
    consent = pipeline.consent
    settings = agent.config.privacy
    counters = agent.event_counters
    return {
        "consent": consent.level, "version": consent.version, "decided_by": consent.source,
        "classes_allowed": sorted(consent.allowed),
        "signals_sent": len(pipeline.wire_plan.signals),
        "signals_kept_local": len(pipeline.plan.signals) - len(pipeline.wire_plan.signals),
        "position": {"signals": [settings.location.latitude, settings.location.longitude],
                     "precision_m": settings.location.precision_m,
                     "tracks": settings.location.tracks,
                     "zones": [zone.name for zone in settings.zones]},
        "pseudonym": settings.pseudonym.enabled,
        "dropped_on_downgrade": agent.dropped_on_downgrade,
        "events": {"detectors": [d.name for d in pipeline.events.detectors],
                   "found": dict(pipeline.events.found), "sent": counters.sent,
                   "withheld": dict(counters.withheld),
                   "positions_withheld": counters.positions_withheld},
    }


def _source_status(agent: Agent, name: str, now: float) -> dict[str, Any]:
    source = next(s for s in agent.sources if s.name == name)
    health = source.health
    config = next(c for c in agent.config.sources if c.name == name)
    age = None if not health.last_frame_time else round(now - health.last_frame_time, 1)
    return {"name": name, "type": config.type,
            "channel": config.channel or (str(config.path) if config.path else location(config)),
            "frames_per_s": round(agent.rates.rates.get(name, 0.0), 1),
            **health.counters(), "last_failure": health.last_failure or None,
            "stale_after_s": config.stale_after,
            "last_frame_age_s": age, "finished": source.finished.is_set()}


# A bus's counters of frames it could not use (each is also warned of below); `diag status`
# sums them and `diag buses` exits with EXIT_PROBLEM when any is non-zero.
FRAME_PROBLEMS = ("error_frames", "short_frames", "decode_errors", "overflow")


def frame_problems(source: Mapping[str, Any]) -> int:
    return sum(source[key] for key in FRAME_PROBLEMS)


def warnings(document: Mapping[str, Any]) -> list[str]:
    """Problems in the words a field technician would use."""
    found = []
    for source in document["sources"]:
        age = source["last_frame_age_s"]
        if source["type"] in VALUE_SOURCE_TYPES:
            found += value_source_warnings(source)
            continue
        found += failure_warning(source, f"bus {source['name']}")
        if source["finished"]:
            continue
        if age is None:
            found.append(f"bus {source['name']} ({source['channel']}): no frame received yet")
        elif age > SILENT_BUS_AFTER and source["type"] != "replay":
            found.append(f"bus {source['name']}: silent for {age:.0f} s (ignition off, "
                         "wiring, or interface down?)")
        if source["error_frames"]:
            found.append(f"bus {source['name']}: {source['error_frames']} error frames "
                         "(termination, bitrate or a faulty node)")
        if source["short_frames"] or source["decode_errors"]:
            found.append(f"bus {source['name']}: {source['short_frames']} short frames and "
                         f"{source['decode_errors']} undecodable frames (DBC does not match "
                         "the vehicle?)")
        if source["overflow"]:
            found.append(f"bus {source['name']}: {source['overflow']} frames lost in the kernel "
                         "(the agent did not read fast enough: CPU starved, or raise "
                         "receive_buffer_kb)")
        if source["reconnects"]:
            found.append(f"bus {source['name']}: reopened {source['reconnects']} times")
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


def signal_values(agent: Agent, pattern: str = "*") -> list[dict[str, Any]]:
    now = time.time()
    rows = []
    with agent.lock:
        readings = [reading for store in agent.stores.values()
                    for reading in store.current_values()]
    for planned, raw, stamp in readings:
        if not fnmatchcase(planned.key, pattern):
            continue
        value = raw * planned.scale + planned.offset
        label = planned.choices.get(int(raw)) if planned.choices else None
        rows.append({"signal": planned.key, "value": value, "raw": raw, "unit": planned.unit,
                     "label": label, "age_s": round(now - stamp, 2), "mode": planned.mode})
    return rows


def buses(agent: Agent, top: int = 10) -> list[dict[str, Any]]:
    documents = []
    for source in agent.sources:
        store = agent.stores[source.name]
        documents.append({
            **_source_status(agent, source.name, time.time()),
            "filters": [f"0x{f['can_id']:X}" for f in store.can_filters()],
            "unknown_ids": [{"id": f"0x{frame_id:X}", "frames": count}
                            for frame_id, count in store.ignored_ids.most_common(top)],
        })
    return documents
