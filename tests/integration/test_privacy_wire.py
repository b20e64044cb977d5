"""Privacy on the wire: the real agent, a real Mosquitto, and everything it publishes decoded.

For each consent level and for a privacy zone, every message the vehicle publishes is captured
and opened; no signal, coordinate or identifier the consent withholds may appear in any of them.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devkit.broker import MosquittoBroker
from devkit.pki import DevPki

from agent.config.schema import LocationConfig, PrivacyConfig
from agent.privacy.consent import ALLOWED_CLASSES, Classifier, pseudonym, rotation_period
from agent.privacy.location import LocationPolicy, distance_m
from agent.runtime.control import ControlUnavailable, request
from tests.helpers.agent_setup import (
    BUNDLED_EVENTS,
    REPO,
    _env,
    run_agent,
    write_agent_config,
)
from tests.helpers.capture import Capture
from tests.helpers.privacy_setup import HOME, Decoded, decode_all, write_gps_drive

CLASSIFY = Classifier(PrivacyConfig())


def _settle(capture: Capture, expected_at_least: int = 1, quiet: float = 2.0) -> None:
    """Wait until messages stop arriving (deadline 30 s)."""
    deadline = time.monotonic() + 30
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(capture.messages)
        if count != seen:
            seen, since = count, time.monotonic()
        elif count >= expected_at_least and time.monotonic() - since > quiet:
            return
        time.sleep(0.1)


def _replay_and_capture(config: Path, mosquitto: MosquittoBroker, dev_pki: DevPki,
                        public_key: Path) -> tuple[subprocess.CompletedProcess[str], Decoded]:
    """Run the agent over its whole drive; everything it published, opened."""
    capture = Capture(mosquitto.port, dev_pki.client("backend"))
    try:
        agent = run_agent(config, "--exit-after-replay")
        assert agent.returncode == 0, agent.stderr[-3000:]
        _settle(capture)
    finally:
        capture.close()
    return agent, decode_all(capture.messages, public_key)


@pytest.mark.parametrize("level", ["off", "vehicle-health", "full"])
def test_each_consent_level_sends_only_what_it_allows(tmp_path, mosquitto, dev_pki, level):
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                extra=f'\n[privacy]\nconsent = "{level}"\nconsent_version = 3\n'
                                      '\n[events]\nenabled = true\n')
    agent, decoded = _replay_and_capture(config, mosquitto, dev_pki, tmp_path / "vehicle.pub")
    allowed = ALLOWED_CLASSES[level]

    assert len(decoded.batches) == agent.stderr.count("sealed batch") >= 4
    assert all(b.privacy == {"consent": level, "ver": 3} for b in decoded.batches)
    sent = decoded.keys_sent()
    assert {CLASSIFY(key) for key in sent} <= allowed
    withheld = [key for key in _all_bundled_keys() if CLASSIFY(key) not in allowed]
    for plain in decoded.plain:
        leaked = [key for key in withheld if key.encode() in plain]
        assert leaked == []
    assert [e.type for e in decoded.events] == (BUNDLED_EVENTS if level == "full" else [])
    assert all(e.privacy == {"consent": level, "ver": 3} for e in decoded.events)
    if level == "off":
        assert sent == set() and all(not b.series for b in decoded.batches)
        assert all(b.health for b in decoded.batches)  # health counters still flow
    elif level == "vehicle-health":
        assert "can0.BMS_Pack.SOC" in sent and "can0.BCM_Seats.SeatOccupied_FL" not in sent
        assert "can0.ESP_VehicleSpeed.VehicleSpeed" not in sent
    else:
        assert len(sent) >= 800 and "can0.BCM_Seats.SeatOccupied_FL" in sent
        load = next(e for e in decoded.events if e.type == "load_change")
        assert load.data["direction"] == "loaded"
        assert load.data["height_change_mm"] == pytest.approx(-22.4, abs=2.0)
        assert load.data["pressure_change_kpa"] == pytest.approx(4.0, abs=1.0)
        stop = next(e for e in decoded.events if e.type == "stop")
        assert 40 <= stop.data["dwell_s"] <= 55


def _all_bundled_keys() -> list[str]:
    from agent.decoding.dbc import load_dbc
    from tests.helpers.agent_setup import BUNDLED_DBC
    database = load_dbc([BUNDLED_DBC]).database
    return [f"can0.{m.name}.{s.name}" for m in database.messages for s in m.signals]


def test_zone_precision_and_pseudonym_on_the_wire(tmp_path, mosquitto, dev_pki):
    dbc, log, route = write_gps_drive(tmp_path)
    secret = tmp_path / "pseudonym.key"
    secret.write_bytes(bytes(range(32)))
    vehicle = "gps-0001"
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client(vehicle),
                                vehicle=vehicle, log=log, dbc=dbc, window=30.0, extra=f"""
[privacy]
consent = "full"
[privacy.location]
latitude = "can0.GPS_Position.Latitude"
longitude = "can0.GPS_Position.Longitude"
precision_m = 500
[[privacy.zones]]
name = "home"
center = [{HOME[0]}, {HOME[1]}]
radius_m = 300
[privacy.pseudonym]
enabled = true
key = "{secret}"
rotation = 3600
[events]
enabled = true
""")
    _, decoded = _replay_and_capture(config, mosquitto, dev_pki, tmp_path / "vehicle.pub")
    assert decoded.batches

    # No identifier: the vehicle id appears in no payload; each names the pseudonym of its hour.
    assert all(vehicle.encode() not in plain for plain in decoded.plain)
    for body in decoded.batches:
        assert body.vehicle == pseudonym(bytes(range(32)), vehicle,
                                         rotation_period(body.t0_ms, 3600))
    # No coordinate inside the zone, none at full precision; every one outside is there.
    lats = decoded.samples("can0.GPS_Position.Latitude")
    lons = decoded.samples("can0.GPS_Position.Longitude")
    assert lats and set(lats) == set(lons)
    policy = LocationPolicy(LocationConfig(precision_m=500), ())
    by_time = {round(p.t * 1000): p for p in route}
    expected_times = set()
    for t_ms in range(round(route[0].t) * 1000 + 1000, math.floor(route[-1].t) * 1000 + 1,
                      1000):
        before = by_time.get(t_ms - 100)
        if before is not None and distance_m(HOME, (before.lat, before.lon)) > 300:
            expected_times.add(t_ms)
    assert set(lats) == expected_times
    for t_ms in lats:
        assert policy.snap(lats[t_ms], lons[t_ms]) == pytest.approx((lats[t_ms], lons[t_ms]),
                                                                    abs=2e-7)
        assert distance_m(HOME, (by_time[t_ms - 100].lat, by_time[t_ms - 100].lon)) > 300
    raw_longitudes = {f"{p.lon:.7f}".encode() for p in route}
    assert not any(raw in plain for plain in decoded.plain for raw in raw_longitudes)
    # Events: the trip starts in the zone (no position), the stop and the end are snapped.
    types = [e.type for e in decoded.events]
    assert types == ["trip_start", "stop", "trip_end"]
    start, stop, end = decoded.events
    assert start.positions == {}
    assert set(end.positions) == {"end"}  # the start of the trip was in the zone
    for lat, lon in (stop.positions["at"], end.positions["end"]):
        assert policy.snap(lat, lon) == pytest.approx((lat, lon), abs=1e-9)
        assert distance_m(HOME, (lat, lon)) > 300
    assert end.data["distance_km"] == pytest.approx(50 / 3.6 * 125 / 1000, rel=0.05)


def test_consent_downgrade_drops_spooled_batches_and_applies_from_the_next_window(
        tmp_path, mosquitto, dev_pki):
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                window=10.0, speed=8.0, extra="""
reconnect_min = 0.2
reconnect_max = 0.5
[control]
socket = "control.sock"
[events]
enabled = true
""")
    capture = Capture(mosquitto.port, dev_pki.client("backend"))
    mosquitto.stop()
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config),
                              "--exit-after-replay"], stderr=subprocess.PIPE, text=True,
                             env=_env(), cwd=REPO)
    try:
        socket_path = tmp_path / "control.sock"
        deadline = time.monotonic() + 60
        depth = 0
        while time.monotonic() < deadline and depth < 4:
            with contextlib.suppress(ControlUnavailable):
                depth = request(socket_path, "queue")["depth"]
            time.sleep(0.2)
        assert depth >= 4, "batches did not pile up in the spool while the broker was down"
        answer = request(socket_path, "consent", {"level": "vehicle-health"}, timeout=10)
        assert "vehicle-health" in answer
        privacy = request(socket_path, "privacy")
        assert privacy["consent"] == "vehicle-health" and privacy["decided_by"] == "local"
        assert privacy["dropped_on_downgrade"] >= 4
        mosquitto.start()
        _, stderr = agent.communicate(timeout=120)
        assert agent.returncode == 0, stderr[-3000:]
        _settle(capture)
    finally:
        if agent.poll() is None:
            agent.kill()
        capture.close()
    decoded = decode_all(capture.messages, tmp_path / "vehicle.pub")
    assert decoded.batches, "nothing arrived after the downgrade"
    # Nothing sealed before the downgrade left the vehicle: every batch and event is under
    # the new consent, and the first sequence numbers (sealed under full) never arrived.
    assert {b.privacy["consent"] for b in decoded.batches} == {"vehicle-health"}
    assert all(e.privacy["consent"] == "vehicle-health" for e in decoded.events)
    assert min(b.seq for b in decoded.batches) >= 4
    sent = decoded.keys_sent()
    assert sent and {CLASSIFY(key) for key in sent} == {"technical"}
    assert all(b"BCM_Seats" not in plain for plain in decoded.plain)
