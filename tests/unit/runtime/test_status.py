"""agent/runtime/status.py: documents and warnings from hand-made snapshots, no agent running.

The snapshot is a plain value, so every warning can be provoked by writing the counter that
causes it; each source type's own warnings come from its module through the registry.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from agent.config.schema import (
    AgentConfig,
    KeysConfig,
    StateConfig,
    UplinkConfig,
    VehicleConfig,
)
from agent.decoding.frames import StoreStats
from agent.events.engine import EngineStats
from agent.events.sink import EventDelivery
from agent.output.batch import BatcherStats
from agent.output.spool import SpoolStats
from agent.output.uplink import UplinkStats
from agent.privacy.consent import Consent
from agent.runtime import clock, status
from agent.runtime.status import AgentSnapshot, PrivacyStats
from agent.sampling.plan import PlannedSignal
from agent.sampling.ring import RingStats
from agent.sources.canbus import CanBusConfig
from agent.sources.gpsd import GpsdConfig
from agent.sources.health import SourceHealth, SourceStats
from agent.sources.serial_sensors import SerialConfig


def source(name: str, type_: str, where: str, *, age: float | None = 1.0,
           **counters: int) -> SourceStats:
    health = SourceHealth()
    for key, value in counters.items():
        if hasattr(health, key):
            setattr(health, key, value)
        else:
            health.state[key] = value
    return SourceStats(name=name, type=type_, where=where, value_source=type_ in ("gpsd", "serial"),
                       counters=health.counters(), last_failure="",
                       last_frame_time=0.0 if age is None else time.time() - age,
                       stale_after=10.0, finished=False)


@pytest.fixture
def snapshot(tmp_path) -> AgentSnapshot:
    config = AgentConfig(
        path=tmp_path / "config.toml", vehicle=VehicleConfig("v1"),
        sources=(CanBusConfig("can0", "socketcan", channel="can0"), GpsdConfig("gps", "gpsd"),
                 SerialConfig("tpms", "serial", port="/dev/ttyTPMS", protocol="tpms-binary")),
        keys=KeysConfig(tmp_path / "vehicle.key"), state=StateConfig(tmp_path),
        uplink=UplinkConfig(host="broker.example", port=1883, tls=False))
    return AgentSnapshot(
        config=config, boot=bytes(16), uptime_s=12.34, last_update=None,
        sources=(source("can0", "socketcan", "can0", frames=500),
                 source("gps", "gpsd", "127.0.0.1:2947", connected=1, fix_mode=3),
                 source("tpms", "serial", "/dev/ttyTPMS (tpms-binary, 9600 baud)",
                        connected=1)),
        frame_rates={"can0": 49.96},
        stores={"can0": StoreStats(filters=(0x101, 0x2A0),
                                   unknown_ids=((0x7FF, 9), (0x100, 3), (0x200, 1))),
                "gps": StoreStats((), ()), "tpms": StoreStats((), ())},
        ring=RingStats(capacity=1000, written=250),
        batches=BatcherStats(sealed=3, signals=40, ring_lost=0, clock=clock.NTP),
        spool=SpoolStats(depth=1, bytes=900, oldest_created=time.time() - 5, evicted=0,
                         not_kept=0, moved_aside=0),
        spool_max_bytes=64 * 2**20,
        uplink=UplinkStats(connected=True, published=3, acked=2, dropped=0, connects=1,
                           connect_failures=0, refused=0, last_puback=time.time() - 2),
        privacy=PrivacyStats(consent=Consent("full", 0, "config"), signals_sent=40,
                             signals_planned=43, dropped_on_downgrade=0,
                             events=EngineStats(("trip", "stop"), {"trip_start": 1}),
                             delivery=EventDelivery(sent=1, withheld={}, positions_withheld=0)))


def test_a_healthy_agent_is_documented_without_warnings(snapshot):
    document = status.status(snapshot)

    assert document["warnings"] == []
    assert (document["vehicle"], document["boot"], document["uptime_s"]) == ("v1", "00" * 16,
                                                                             12.3)
    assert document["ring"] == {"capacity": 1000, "written": 250, "fill": 0.25, "lost": 0}
    assert document["batches"] == {"sealed": 3, "window_s": 60.0, "signals": 40}
    bus = document["sources"][0]
    assert (bus["name"], bus["channel"], bus["frames_per_s"], bus["frames"]) == (
        "can0", "can0", 50.0, 500)
    assert document["uplink"]["host"] == "broker.example"
    assert document["privacy"]["signals_kept_local"] == 3
    assert document["privacy"]["events"]["found"] == {"trip_start": 1}


@pytest.mark.parametrize("change, warning", [
    (lambda s: {"uplink": dataclasses.replace(s.uplink, connected=False, connect_failures=4)},
     "not connected to broker.example:1883 (4 failed attempts)"),
    (lambda s: {"spool": dataclasses.replace(s.spool, evicted=2)},
     "spool was full: 2 oldest batches dropped"),
    (lambda s: {"batches": dataclasses.replace(s.batches, ring_lost=7)},
     "ring buffer overran: 7 samples lost"),
    (lambda s: {"batches": dataclasses.replace(s.batches, clock=clock.RTC)},
     "system clock not synchronised"),
    (lambda s: {"sources": (source("can0", "socketcan", "can0", age=None),)},
     "bus can0 (can0): no frame received yet"),
    (lambda s: {"sources": (source("can0", "socketcan", "can0", age=30.0),)},
     "bus can0: silent for 30 s"),
    (lambda s: {"sources": (source("can0", "socketcan", "can0", overflow=5),)},
     "bus can0: 5 frames lost in the kernel"),
    (lambda s: {"sources": (source("gps", "gpsd", "127.0.0.1:2947", connected=1,
                                   fix_mode=1),)},
     "gpsd gps (127.0.0.1:2947): no fix"),
    (lambda s: {"sources": (source("tpms", "serial", "/dev/ttyTPMS", connected=0,
                                   reconnects=3),)},
     "serial tpms (/dev/ttyTPMS): not connected (3 attempts)"),
])
def test_each_problem_is_worded_for_a_technician(snapshot, change, warning):
    document = status.status(dataclasses.replace(snapshot, **change(snapshot)))

    assert any(found.startswith(warning) for found in document["warnings"]), \
        document["warnings"]


def test_a_recording_is_not_silent_when_it_pauses(snapshot):
    replay = dataclasses.replace(source("can0", "replay", "drive.log", age=30.0))

    assert status.status(dataclasses.replace(snapshot, sources=(replay,)))["warnings"] == []


def test_buses_list_the_filters_and_the_most_frequent_unknown_ids(snapshot):
    (bus, *_) = status.buses(snapshot, top=2)

    assert bus["filters"] == ["0x101", "0x2A0"]
    assert bus["unknown_ids"] == [{"id": "0x7FF", "frames": 9}, {"id": "0x100", "frames": 3}]


def test_signals_are_filtered_by_glob_and_scaled(snapshot):
    speed = PlannedSignal(source="can0", key="can0.ESP.Speed", message="ESP", signal="Speed",
                          frame_id=0x101, index=0, period_ms=1000, mode="last", scale=0.5,
                          offset=1.0, unit="km/h", choices=None, is_float=False)
    rows = status.signal_values([(speed, 10, time.time())], "can0.ESP.*")

    assert [(row["signal"], row["value"], row["raw"]) for row in rows] == [
        ("can0.ESP.Speed", 6.0, 10)]
    assert status.signal_values([(speed, 10, time.time())], "gps.*") == []


def test_gps_and_sensors_show_only_their_sources_and_say_when_none_is_configured(snapshot):
    assert [s["name"] for s in status.gps(snapshot, {})["sources"]] == ["gps"]
    assert [s["name"] for s in status.sensors(snapshot, {})["sources"]] == ["tpms"]
    bus_only = dataclasses.replace(snapshot, sources=snapshot.sources[:1])
    assert status.gps(bus_only, {})["warnings"] == [
        "no gpsd source configured ([[sources]] type = \"gpsd\")"]
    assert status.sensors(bus_only, {})["warnings"] == [
        "no serial sensor source configured ([[sources]] type = \"serial\")"]


def test_the_config_path_is_the_file_the_agent_runs(snapshot, tmp_path):
    assert Path(status.status(snapshot)["config"]["path"]) == tmp_path / "config.toml"
