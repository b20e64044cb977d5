"""Events and trigger captures under the location policy (issue #25, items 1 and 5).

A trigger capture is a small track: its positions must be paired by time, zone-checked and
snapped exactly as telemetry's are, and other location values must not say where the car was
inside a zone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.config.schema import (
    EventsConfig,
    LocationConfig,
    PrivacyConfig,
    SamplingConfig,
    ZoneConfig,
)
from agent.decoding.dbc import load_dbc
from agent.events.engine import event_inputs
from agent.events.model import Event
from agent.events.sink import EventCounters, EventIdentity, EventSink
from agent.output.spool import Spool
from agent.privacy.consent import Classifier, Consent
from agent.privacy.location import LocationPolicy, TelemetryLocationFilter, distance_m
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sampling.ring import Field, RingSlice
from agent.sources.gpsd_json import GPS_CATALOGUE
from agent.wire.cose import Signer
from agent.wire.keys import generate_key_pair, load_private_key

HOME = (48.1, 11.5)
ZONE = ZoneConfig("home", center=HOME, radius_m=300)
LOCATION = LocationConfig(precision_m=500)
CLASSIFY = Classifier(PrivacyConfig(location=LOCATION))


def is_location(key: str) -> bool:
    return CLASSIFY(key) == "location"


def east_of_home(metres: float) -> tuple[float, float]:
    return HOME[0], HOME[1] + metres / (111_320.0 * np.cos(np.radians(HOME[0])))


def capture_leaving_home() -> dict[str, list[list[float]]]:
    """24 s of a car leaving home at 50 km/h: the first 16 positions inside the zone."""
    samples: dict[str, list[list[float]]] = {"gps.lat": [], "gps.lon": [], "gps.alt": [],
                                             "can0.BMS_Pack.SOC": []}
    for second in range(24):
        t = 1_000_000 + second * 1000
        lat, lon = east_of_home(80 + second * 14)
        samples["gps.lat"].append([t, lat])
        samples["gps.lon"].append([t, lon])
        samples["gps.alt"].append([t, 519.3])
        samples["can0.BMS_Pack.SOC"].append([t, 60.0])
    samples["gps.lat"].append([1_030_000, 48.2])  # no partner: cannot be judged
    return samples


def test_a_capture_pairs_positions_by_time_and_keeps_none_in_a_zone_or_at_full_precision():
    policy = LocationPolicy(LOCATION, (ZONE,))
    samples = capture_leaving_home()
    kept, withheld = policy.filter_captured(samples, is_location)

    outside = [row[0] for row in samples["gps.lon"]
               if distance_m(HOME, (samples["gps.lat"][0][1], row[1])) > 300]
    assert 0 < len(outside) < 24
    assert [t for t, _ in kept["gps.lat"]] == [t for t, _ in kept["gps.lon"]]
    sent_times = [t for t, _ in kept["gps.lat"]]
    for (_, lat), (_, lon) in zip(kept["gps.lat"], kept["gps.lon"], strict=True):
        assert distance_m(HOME, (lat, lon)) > 300
        assert policy.snap(lat, lon) == pytest.approx((lat, lon), abs=1e-9)
    # Every position outside the zone whose snapped cell is outside too is there.
    assert set(sent_times) == {t for t in outside
                               if policy.reveal(*east_of_home(80 + (t - 1_000_000) / 1000 * 14))}
    # Altitude only where the position was sent; technical values untouched.
    assert [t for t, _ in kept["gps.alt"]] == sent_times
    assert kept["can0.BMS_Pack.SOC"] == samples["can0.BMS_Pack.SOC"]
    assert withheld == 3 * 24 + 1 - 3 * len(sent_times)


def test_a_location_value_without_a_position_to_judge_by_is_withheld():
    policy = LocationPolicy(LOCATION, (ZONE,))
    kept, withheld = policy.filter_captured({"gps.alt": [[1000, 519.0]],
                                             "can0.NAV_Info.GPS_Heading": [[1000, 90.0]]},
                                            is_location)
    assert kept == {} and withheld == 2


def test_without_zones_other_location_values_are_sent_as_they_are():
    policy = LocationPolicy(LOCATION, ())
    kept, withheld = policy.filter_captured({"gps.alt": [[1000, 519.0]]}, is_location)
    assert kept == {"gps.alt": [[1000, 519.0]]} and withheld == 0


def test_trip_summaries_only_sends_no_captured_track():
    policy = LocationPolicy(LocationConfig(precision_m=500, tracks=False), ())
    kept, withheld = policy.filter_captured(capture_leaving_home(), is_location)
    assert set(kept) == {"can0.BMS_Pack.SOC"} and withheld == 3 * 24 + 1


@pytest.fixture
def sink(tmp_path: Path):
    def make(level: str, location: LocationConfig = LOCATION) -> EventSink:
        key = tmp_path / "vehicle.key"
        if not key.exists():
            generate_key_pair(key)
        return EventSink(Consent(level, 1, "config"), CLASSIFY,
                         LocationPolicy(location, (ZONE,)),
                         EventIdentity(b"b" * 16, 1, lambda t: "v", lambda: "ntp"),
                         Signer(load_private_key(key), "x"), Spool(tmp_path / "s.sqlite", 1 << 20),
                         lambda spooled: None, EventCounters(), lambda: 0)
    return make


def trigger_event() -> Event:
    return Event("trigger", 1_030_000, "technical",
                 {"name": "t", "signal": "can0.BMS_Pack.SOC", "samples": capture_leaving_home()},
                 signals=("can0.BMS_Pack.SOC",))


def test_the_event_sink_sends_captures_through_the_location_policy(sink):
    full = sink("full")
    body = full.filtered(trigger_event())
    assert body is not None
    samples = body.data["samples"]
    assert 0 < len(samples["gps.lat"]) < 24
    for (_, lat), (_, lon) in zip(samples["gps.lat"], samples["gps.lon"], strict=True):
        assert distance_m(HOME, (lat, lon)) > 300
    assert full.counters.samples_withheld > 16
    health = sink("vehicle-health").filtered(trigger_event())
    assert health is not None and set(health.data["samples"]) == {"can0.BMS_Pack.SOC"}


def test_trip_summaries_keep_event_positions_but_no_captured_track(sink):
    summaries = sink("full", LocationConfig(precision_m=500, tracks=False))
    far = east_of_home(2000)
    stop = summaries.filtered(Event("stop", 1, "driving", {"dwell_s": 60.0}, {"at": far}))
    assert stop is not None and distance_m(stop.positions["at"], far) < 500
    trigger = summaries.filtered(trigger_event())
    assert trigger is not None and set(trigger.data["samples"]) == {"can0.BMS_Pack.SOC"}


def test_trips_and_stops_read_the_position_even_when_it_is_not_sent():
    vehicle_dbc = Path(__file__).resolve().parents[3] / "dbc" / "vehicle.dbc"
    databases = {"can0": load_dbc((vehicle_dbc,)).database, "gps": GPS_CATALOGUE}
    keys = {s.key for s in event_inputs(EventsConfig(enabled=True), databases, SamplingConfig(),
                                        ("gps.lat", "gps.lon"))}
    assert {"gps.lat", "gps.lon"} <= keys
    off = event_inputs(EventsConfig(enabled=False), databases, SamplingConfig(),
                       ("gps.lat", "gps.lon"))
    assert off == ()


def planned(index: int, key: str) -> PlannedSignal:
    source, _, rest = key.partition(".")
    message, _, signal = rest.rpartition(".")
    return PlannedSignal(index, key, source, 1, message, signal, 1000, "last", True, 1, 0, "",
                         None)


def test_telemetry_withholds_other_location_values_in_a_zone():
    plan = SamplingPlan(tuple(planned(i, k) for i, k in
                              enumerate(("gps.lat", "gps.lon", "gps.alt", "gps.sats"))), 10_000)
    telemetry = TelemetryLocationFilter(LocationPolicy(LOCATION, (ZONE,)), plan, is_location)
    rows = []
    for t, metres in ((1000, 50), (2000, 2000)):
        lat, lon = east_of_home(metres)
        rows += [(t, 0, lat), (t, 1, lon), (t, 2, 519.0), (t, 3, 9.0)]
    rows.append((3000, 2, 520.0))  # altitude with no position at its time
    records = RingSlice(np.array([r[0] for r in rows], dtype=np.int64),
                        np.array([r[1] for r in rows], dtype=np.uint16),
                        np.full(len(rows), Field.VALUE, dtype=np.uint8),
                        np.array([r[2] for r in rows], dtype=np.float64).view(np.int64))
    sent = telemetry(records)
    assert sorted(zip(sent.time_ms.tolist(), sent.signal.tolist(), strict=True)) == [
        (1000, 3), (2000, 0), (2000, 1), (2000, 2), (2000, 3)]
