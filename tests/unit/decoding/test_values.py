"""Value sources in the sampling path: catalogues in the plan, the ValueStore under the sampler."""

from __future__ import annotations

import pytest

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.decoding.values import ValueStore
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.sampling.sampler import Sampler
from agent.sources.base import Reading
from agent.sources.gpsd_json import GPS_CATALOGUE
from agent.sources.health import SourceHealth
from agent.sources.sensor_protocols import NmeaSentences
from tests.helpers.dbc_fixtures import write_small_dbc


def test_plan_resolves_rules_against_dbcs_and_catalogues_in_source_order(tmp_path):
    database = load_dbc([write_small_dbc(tmp_path)]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.Engine.Speed"), SignalRule("gps.*"), SignalRule("gps.sats", exclude=True),
        SignalRule("tpms.*.pressure", mode="stats", period=5.0))),
        {"gps": GPS_CATALOGUE, "can0": database, "tpms": NmeaSentences.catalogue})
    assert [s.key for s in plan.signals] == [
        "gps.lat", "gps.lon", "gps.alt", "gps.speed", "gps.track", "gps.mode", "gps.hdop",
        "can0.Engine.Speed",
        "tpms.FL.pressure", "tpms.FR.pressure", "tpms.RL.pressure", "tpms.RR.pressure"]
    lat = plan.signals[0]
    assert (lat.source, lat.signal, lat.is_float, lat.unit, lat.frame_id) == (
        "gps", "lat", True, "deg", 0)
    mode = plan.signals[5]
    assert (mode.is_float, mode.choices) == (False, {0: "unknown", 1: "no fix", 2: "2D", 3: "3D"})
    pressure = plan.signals[8]
    assert (pressure.mode, pressure.period_ms, pressure.scale, pressure.unit) == (
        "stats", 5000, 0.1, "kPa")
    assert plan.frame_ids("can0") == {0x100}


@pytest.fixture
def gps_rig():
    def make(rules, stale_after=10.0):
        plan = build_plan(SamplingConfig(stale_after=stale_after, signals=tuple(rules)),
                          {"gps": GPS_CATALOGUE, "tpms": NmeaSentences.catalogue})
        ring = Ring(1000)
        ring.set_float_signals(frozenset(s.index for s in plan.signals if s.is_float))
        health = SourceHealth()
        stores = {"gps": ValueStore(plan.for_source("gps"), health),
                  "tpms": ValueStore(plan.for_source("tpms"), health)}
        sampler = Sampler(plan, ring, stores, 60_000, lambda t0, t1: None)

        def feed(source, t, quantity, value):
            sampler.advance(t)
            stores[source].accept(Reading(t, quantity, value))

        def records():
            return [(r.time_ms, plan.signals[r.signal].key, r.field, r.value)
                    for r in ring.read(0)]
        return feed, records, health, stores
    return make


def test_floats_stay_floats_and_integers_become_raw_by_scale(gps_rig):
    feed, records, health, _ = gps_rig([SignalRule("gps.lat"), SignalRule("tpms.FL.pressure")])
    feed("gps", 100.2, "lat", 48.137154)
    feed("tpms", 100.3, "FL.pressure", 231.5)
    feed("gps", 101.0, "lon", 11.5)  # not planned: counted as ignored
    assert records() == [(101000, "gps.lat", Field.VALUE, 48.137154),
                         (101000, "tpms.FL.pressure", Field.VALUE, 2315)]
    assert (health.frames, health.ignored) == (3, 1)


def test_withdrawn_position_is_not_sampled_again(gps_rig):
    feed, records, health, _ = gps_rig([SignalRule("gps.lat")])
    feed("gps", 100.5, "lat", 1.25)
    feed("gps", 101.5, "lat", None)  # the fix was lost
    feed("gps", 103.5, "mode", 1)
    assert records() == [(101000, "gps.lat", Field.VALUE, 1.25)]
    assert health.frames == 3 - 1  # a withdrawal is not a frame


def test_stale_values_stop_and_stats_cover_their_period(gps_rig):
    feed, records, health, _ = gps_rig(
        [SignalRule("tpms.FL.height", mode="stats"), SignalRule("tpms.FL.battery")],
        stale_after=1.5)
    feed("tpms", 100.1, "FL.height", 100.0)
    feed("tpms", 100.2, "FL.battery", 2.95)
    feed("tpms", 100.6, "FL.height", 110.5)
    feed("tpms", 103.0, "FL.height", float("nan"))
    assert records() == [
        (100000, "tpms.FL.height", Field.MIN, 1000), (100000, "tpms.FL.height", Field.MAX, 1105),
        (100000, "tpms.FL.height", Field.SUM, 2105), (100000, "tpms.FL.height", Field.COUNT, 2),
        (101000, "tpms.FL.battery", Field.VALUE, 295)]  # at 102 s it is 1.8 s old: stale
    assert health.rejected == {"not_finite": 1}


def test_current_values_are_what_diag_signals_shows(gps_rig):
    feed, _, _, stores = gps_rig([SignalRule("gps.*")])
    feed("gps", 100.0, "mode", 3)
    feed("gps", 100.0, "speed", 12.5)
    assert [(planned.key, raw, stamp) for planned, raw, stamp in
            stores["gps"].current_values()] == [("gps.speed", 12.5, 100.0),
                                                ("gps.mode", 3, 100.0)]
    assert stores["gps"].can_filters() == []
