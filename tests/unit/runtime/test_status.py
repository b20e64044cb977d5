"""agent/runtime/status.py: documents and warnings from hand-made snapshots, no agent running.

The snapshot is a plain value, so every warning can be provoked by writing the counter that
causes it; each source type's own warnings come from its module through the registry.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from agent.runtime import clock, status
from agent.runtime.status import AgentSnapshot
from agent.sampling.plan import PlannedSignal
from tests.helpers.snapshots import make_snapshot, source


@pytest.fixture
def snapshot(tmp_path) -> AgentSnapshot:
    return make_snapshot(tmp_path)


def test_a_healthy_agent_is_documented_without_warnings(snapshot):
    document = status.status(snapshot)

    assert document["warnings"] == []
    assert (document["vehicle"], document["boot"], document["uptime_s"]) == ("v1", "00" * 16,
                                                                             12.3)
    assert document["ring"] == {"capacity": 1000, "written": 250, "fill": 0.25,
                                "lookback_s": 0.0, "lost": 0}
    assert document["batches"] == {"sealed": 3, "quiet": 0, "window_s": 60.0,
                                    "signals": 40}
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
    readings = {"can0": [(speed, 10, snapshot.sources[0].last_frame_time)]}
    rows = status.signal_values(readings, snapshot.sources, "can0.ESP.*")

    assert [(row["signal"], row["value"], row["raw"]) for row in rows] == [
        ("can0.ESP.Speed", 6.0, 10)]
    assert status.signal_values(readings, snapshot.sources, "gps.*") == []
    unprefixed = status.signal_values(readings, snapshot.sources, "ESP.*")
    assert [row["signal"] for row in unprefixed] == ["can0.ESP.Speed"]
    assert [row["signal"] for row in status.signal_values(readings, snapshot.sources,
                                                          "ESP*")] == ["can0.ESP.Speed"]


@pytest.mark.parametrize("recorded", [1_700_000_000.0, time.time() + 1945.1])
def test_ages_under_a_replay_come_from_one_clock_and_are_never_negative(snapshot, monkeypatch,
                                                                        recorded):
    """A replay's frames carry the recording's timestamps (years ago, or ahead of an unset
    clock): a frame's age is the time since it arrived, a value's adds how far its frame
    lies behind the newest in the recording's own time."""
    monkeypatch.setattr(status.time, "monotonic", lambda: 1000.0)
    replay = dataclasses.replace(source("can0", "replay", "drive.log"),
                                 last_frame_time=recorded, last_received=998.0)
    replayed = dataclasses.replace(snapshot, sources=(replay,))
    assert status.status(replayed)["sources"][0]["last_frame_age_s"] == 2.0
    assert status.buses(replayed)[0]["last_frame_age_s"] == 2.0
    speed = PlannedSignal(source="can0", key="can0.ESP.Speed", message="ESP", signal="Speed",
                          frame_id=0x101, index=0, period_ms=1000, mode="last", scale=1.0,
                          offset=0.0, unit="km/h", choices=None, is_float=False)
    rows = status.signal_values({"can0": [(speed, 1, recorded - 3.0), (speed, 2, recorded)]},
                                (replay,))
    assert [row["age_s"] for row in rows] == [5.0, 2.0]


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
