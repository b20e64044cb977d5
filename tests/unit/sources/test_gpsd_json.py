"""gpsd's JSON reports → gps.* quantities, and fuzzing of that parser."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.gpsd_json import GPS_CATALOGUE, POSITION, GpsUpdate, parse_report
from agent.sources.sensor_protocols import Rejected


def report(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_3d_fix_gives_position_altitude_and_gps_time():
    parsed = parse_report(report(**{"class": "TPV", "mode": 3, "lat": 48.137154, "lon": 11.576124,
                                    "altHAE": 560.0, "altMSL": 519.4, "speed": 13.9,
                                    "track": 271.5, "time": "2026-11-23T07:04:57.250Z"}))
    assert parsed == GpsUpdate((("mode", 3), ("lat", 48.137154), ("lon", 11.576124),
                                ("alt", 519.4), ("speed", 13.9), ("track", 271.5)),
                               fix_mode=3, gps_time=1795417497.25)


def test_2d_fix_has_no_altitude():
    parsed = parse_report(report(**{"class": "TPV", "mode": 2, "lat": 1.5, "lon": 2.5,
                                    "alt": 99.0}))
    assert isinstance(parsed, GpsUpdate)
    assert dict(parsed.values)["alt"] is None
    assert dict(parsed.values)["lat"] == 1.5


def test_no_fix_withdraws_the_position_instead_of_repeating_it():
    for mode in (0, 1):
        parsed = parse_report(report(**{"class": "TPV", "mode": mode, "lat": 1.0, "lon": 2.0}))
        assert isinstance(parsed, GpsUpdate)
        assert parsed.values == (("mode", mode), *((name, None) for name in POSITION))
        assert parsed.gps_time is None


def test_sky_gives_hdop_and_used_satellites():
    satellites = [{"PRN": n, "used": n % 2 == 0} for n in range(7)]
    assert parse_report(report(**{"class": "SKY", "hdop": 0.9, "satellites": satellites})) == \
        GpsUpdate((("hdop", 0.9), ("sats", 4.0)))
    assert parse_report(report(**{"class": "SKY", "uSat": 9, "nSat": 12})) == \
        GpsUpdate((("sats", 9.0),))


def test_other_reports_carry_nothing_and_bad_ones_are_rejected_by_reason():
    assert parse_report(report(**{"class": "VERSION", "release": "3.22"})) is None
    assert parse_report(b"{not json") == Rejected("bad_json")
    assert parse_report(b"[1, 2]") == Rejected("malformed")
    assert parse_report(report(**{"class": "TPV", "mode": 7})) == Rejected("malformed")
    assert parse_report(report(**{"class": "TPV", "mode": 2, "lat": 91.0, "lon": 0.0})) == \
        Rejected("out_of_range")
    assert parse_report(b'{"class":"TPV","mode":3,"lat":NaN,"lon":1}') == \
        Rejected("out_of_range")
    assert parse_report(b'{"class":"TPV","mode":2,"lat":1}') == GpsUpdate(
        (("mode", 2), *((name, None) for name in POSITION)), fix_mode=2)  # no position yet
    assert parse_report(b"[" * 100_000) == Rejected("too_long")
    assert parse_report(b"[" * 10_000) == Rejected("bad_json")  # too deep for json


def test_integers_beyond_any_float_are_out_of_range_not_a_crash():
    huge = "1" * 400  # json gives a Python int; float() of it raises OverflowError
    for line in (f'{{"class":"TPV","mode":2,"lat":{huge},"lon":1}}',
                 f'{{"class":"TPV","mode":3,"lat":1,"lon":1,"alt":-{huge}}}',
                 f'{{"class":"TPV","mode":2,"lat":1,"lon":1,"speed":{huge}}}',
                 f'{{"class":"SKY","hdop":{huge}}}', f'{{"class":"SKY","uSat":{huge}}}'):
        assert parse_report(line.encode()) == Rejected("out_of_range"), line


# Integers up to 500 digits: json.loads gives any of them as a Python int, far past a float.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10**500, 10**500)
    | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)
tpv_like = st.fixed_dictionaries(
    {"class": st.sampled_from(["TPV", "SKY"])},
    optional={key: json_values | st.floats() for key in (
        "mode", "lat", "lon", "alt", "altMSL", "speed", "track", "time", "hdop", "uSat",
        "satellites")})


def _check(parsed):
    names = {signal.quantity for signal in GPS_CATALOGUE}
    if isinstance(parsed, GpsUpdate):
        for name, value in parsed.values:
            assert name in names
            assert value is None or math.isfinite(value)
        if parsed.fix_mode is not None:
            assert parsed.fix_mode in (0, 1, 2, 3)
    else:
        assert parsed is None or isinstance(parsed, Rejected)


@settings(max_examples=400, deadline=None)
@given(tpv_like)
def test_any_tpv_or_sky_is_decoded_to_finite_values_or_rejected(document):
    _check(parse_report(json.dumps(document).encode()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_random_bytes_are_rejected_or_ignored(data):
    _check(parse_report(data))
