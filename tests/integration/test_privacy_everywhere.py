"""Privacy on every path a byte can take (issue #25): the real agent on a drive that leaves
home, with a privacy zone, reduced precision, a pseudonym and two triggers capturing the
position, at each consent level; everything published on a real Mosquitto (`#`) captured,
verified and decoded; and the support bundle a technician would take.

Nothing published may hold a coordinate inside the zone or finer than the precision, a
signal or counter the consent withholds, or the vehicle's real id.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from devkit.broker import MosquittoBroker
from devkit.pki import DevPki

from agent.config.schema import LocationConfig, PrivacyConfig
from agent.privacy.consent import ALLOWED_CLASSES, Classifier
from agent.privacy.location import LocationPolicy, distance_m
from agent.runtime.control import ControlUnavailable, request
from agent.sources.health import counters_at_off
from tests.helpers.agent_setup import REPO, _env, run_agent, write_agent_config
from tests.helpers.capture import Capture
from tests.helpers.privacy_setup import HOME, Decoded, decode_all, write_gps_drive

VEHICLE = "home-4711"
RADIUS_M = 300
PRECISION_M = 500
LAT, LON = "can0.GPS_Position.Latitude", "can0.GPS_Position.Longitude"
LOCATION = LocationConfig(latitude=LAT, longitude=LON, precision_m=PRECISION_M)
CLASSIFY = Classifier(PrivacyConfig(location=LOCATION))
GRID = LocationPolicy(LOCATION, ())


def privacy_config(level: str, secret: Path, control: Path | None = None) -> str:
    control_section = f'\n[control]\nsocket = "{control}"\n' if control else ""
    return f"""
[privacy]
consent = "{level}"
consent_version = 7
[privacy.location]
latitude = "{LAT}"
longitude = "{LON}"
precision_m = {PRECISION_M}
[[privacy.zones]]
name = "home"
center = [{HOME[0]}, {HOME[1]}]
radius_m = {RADIUS_M}
[privacy.pseudonym]
enabled = true
key = "{secret}"
rotation = 3600
[events]
enabled = true
[[events.triggers]]
name = "fast"
signal = "can0.ESP_VehicleSpeed.VehicleSpeed"
above = 40
capture = ["can0.GPS_Position.*", "can0.ESP_VehicleSpeed.*", "can0.BMS_Pack.*"]
lookback = 30
post = 30
min_interval = 3600
[[events.triggers]]
name = "charged"
signal = "can0.BMS_Pack.SOC"
above = 50
capture = ["can0.GPS_Position.*", "can0.BMS_Pack.*"]
lookback = 0
post = 45
min_interval = 3600
{control_section}"""


def gps_agent(tmp_path: Path, mosquitto: MosquittoBroker, dev_pki: DevPki, level: str,
              control: Path | None = None) -> tuple[Path, bytes]:
    _, log, _ = write_gps_drive(tmp_path)
    secret = tmp_path / "pseudonym.key"
    secret.write_bytes(bytes(range(100, 132)))
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client(VEHICLE),
                                vehicle=VEHICLE, log=log, dbc=tmp_path / "gps.dbc",
                                window=20.0, extra=privacy_config(level, secret, control))
    return config, secret.read_bytes()


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll `condition` until it holds or `timeout` passes (a wait that signals end)."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.1)
    return True


def capture_run(tmp_path: Path, mosquitto: MosquittoBroker, dev_pki: DevPki,
                level: str) -> tuple[Decoded, str, bytes]:
    config, secret = gps_agent(tmp_path, mosquitto, dev_pki, level)
    capture = Capture(mosquitto.port, dev_pki.client("backend"), topics="#")
    try:
        agent = run_agent(config, "--exit-after-replay")
        assert agent.returncode == 0, agent.stderr[-3000:]
        sealed = agent.stderr.count("sealed batch")
        events = len(re.findall(r"event \d+ \S+ at \d+: spooled", agent.stderr))

        def arrived() -> bool:
            topics = [topic for topic, _ in capture.messages]
            return (sum(t.endswith("/telemetry") for t in topics) >= sealed
                    and sum(t.endswith("/events") for t in topics) >= events)

        assert wait_for(arrived), "not everything the agent sealed reached the capture"
        messages = list(capture.messages)
    finally:
        capture.close()
    decoded = decode_all(messages, tmp_path / "vehicle.pub")
    assert len(decoded.batches) == sealed
    return decoded, agent.stderr, secret


def assert_position_may_leave(lat: float, lon: float) -> None:
    assert distance_m(HOME, (lat, lon)) > RADIUS_M, (lat, lon)
    assert GRID.snap(lat, lon) == pytest.approx((lat, lon), abs=2e-7), (lat, lon)


@pytest.mark.parametrize("level", ["off", "vehicle-health", "full"])
def test_nothing_published_says_more_than_the_consent_allows(tmp_path, mosquitto, dev_pki,
                                                             level):
    decoded, stderr, secret = capture_run(tmp_path, mosquitto, dev_pki, level)
    allowed = ALLOWED_CLASSES[level]
    assert decoded.batches

    # No real id in any payload; batches and events name the pseudonym.
    for plain in decoded.plain:
        assert VEHICLE.encode() not in plain and secret not in plain
    assert all(b.vehicle.startswith("p-") for b in decoded.batches)
    assert all(e.vehicle.startswith("p-") for e in decoded.events)
    # No suppressed class, in telemetry or in a capture.
    assert {CLASSIFY(key) for key in decoded.keys_sent()} <= allowed
    for event in decoded.events:
        assert event.privacy == {"consent": level, "ver": 7}
        for key in event.data.get("samples", {}):
            assert CLASSIFY(key) in allowed, key
    # No coordinate inside the zone or finer than the precision, on any path.
    lats, lons = decoded.samples(LAT), decoded.samples(LON)
    assert set(lats) == set(lons)
    for t in lats:
        assert_position_may_leave(lats[t], lons[t])
    captured = 0
    for event in decoded.events:
        for lat, lon in event.positions.values():
            assert_position_may_leave(lat, lon)
        samples = event.data.get("samples", {})
        capture_lats = dict(samples.get(LAT, []))
        capture_lons = dict(samples.get(LON, []))
        assert set(capture_lats) == set(capture_lons)
        for t in capture_lats:
            assert_position_may_leave(capture_lats[t], capture_lons[t])
            captured += 1

    if level == "off":
        assert decoded.events == [] and decoded.keys_sent() == set()
        for body in decoded.batches:
            assert body.health and body.health == counters_at_off(body.health)
    elif level == "vehicle-health":
        assert decoded.keys_sent() == {"can0.BMS_Pack.SOC"}
        # Only the trigger on a technical signal leaves, without a position.
        assert [e.data["name"] for e in decoded.events] == ["charged"]
        assert set(decoded.events[0].data["samples"]) == {"can0.BMS_Pack.SOC"}
        assert any(body.health.get("can0.frames") for body in decoded.batches)
    else:
        types = sorted(e.type if e.type != "trigger" else e.data["name"]
                       for e in decoded.events)
        assert types == ["charged", "fast", "stop", "trip_end", "trip_start"]
        assert lats and captured  # positions did leave, outside the zone, on both paths
        # The captures started at home: what was inside the zone was withheld, not sent.
        fast = next(e for e in decoded.events if e.data.get("name") == "fast")
        every_second = fast.data["samples"]["can0.BMS_Pack.SOC"]
        assert 0 < len(fast.data["samples"].get(LAT, [])) < len(every_second)


def test_the_support_bundle_says_no_more_than_the_consent(tmp_path, mosquitto, dev_pki):
    control = tmp_path / "control.sock"
    config, secret = gps_agent(tmp_path, mosquitto, dev_pki, "off", control)
    config.write_text(config.read_text().replace("rebase = false",
                                                 "rebase = true\nloop = true"))
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                             stderr=subprocess.DEVNULL, env=_env(), cwd=REPO)
    try:
        def answers() -> bool:
            with contextlib.suppress(ControlUnavailable):
                return request(control, "status")["sources"] is not None
            return False

        assert wait_for(answers, 60), "the agent's control socket never answered"
        bundle = tmp_path / "bundle.tar.gz"
        made = subprocess.run([sys.executable, "-m", "agent", "diag", "bundle", "--config",
                               str(config), "--output", str(bundle)], capture_output=True,
                              text=True, timeout=120, env=_env(), cwd=REPO)
        assert made.returncode == 0, made.stderr
        # The owner erases: the running agent forgets its keys (it holds them in memory).
        keys_before = {k.name: k.read_bytes() for k in (tmp_path / "state").glob("spool-*.key")}
        assert keys_before
        erased = subprocess.run([sys.executable, "-m", "agent", "privacy", "erase", "--config",
                                 str(config), "--json"], capture_output=True, text=True,
                                timeout=60, env=_env(), cwd=REPO)
        assert erased.returncode == 0, erased.stderr
        assert json.loads(erased.stdout)["by"] == "agent"
        for name, key in keys_before.items():
            path = tmp_path / "state" / name
            assert not path.exists() or path.read_bytes() != key
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    with tarfile.open(bundle) as archive:
        members = {m.name.rsplit("/", 1)[1]: archive.extractfile(m).read()
                   for m in archive.getmembers()}
    assert {"status.json", "config.toml", "withheld.json"} <= set(members)
    status = json.loads(members["status.json"])
    assert status["vehicle"] == "<vehicle>"  # the agent answered, and its id was replaced
    for name, data in members.items():
        assert VEHICLE.encode() not in data, name
        assert secret not in data and b"pseudonym.key" not in data, name
        # No coordinate of the drive (or of the zone) anywhere.
        for number in re.findall(rb"-?\d+\.\d+", data):
            value = float(number)
            assert not (48.0 < value < 48.2 or 11.4 < value < 11.6), (name, number)
    withheld = json.loads(members["withheld.json"])["withheld"]
    assert "config.toml: 1 privacy zones (every value)" in withheld
    assert any(item.startswith("the vehicle id (consent off)") for item in withheld)
    config_text = members["config.toml"].decode()
    assert 'center = "<withheld>"' in config_text and 'consent = "off"' in config_text
    assert io.StringIO(config_text).read().count("[[privacy.zones]]") == 1


def test_trip_summaries_only_send_positions_in_events_and_no_track(tmp_path, mosquitto,
                                                                   dev_pki):
    """`tracks = false` (#25, item 5): no position series in telemetry or captures; the trip
    and the stop still say where, zone-checked and snapped."""
    config, _ = gps_agent(tmp_path, mosquitto, dev_pki, "full")
    config.write_text(config.read_text().replace(f"precision_m = {PRECISION_M}",
                                                 f"precision_m = {PRECISION_M}\ntracks = false"))
    capture = Capture(mosquitto.port, dev_pki.client("backend"), topics="#")
    try:
        agent = run_agent(config, "--exit-after-replay")
        assert agent.returncode == 0, agent.stderr[-3000:]
        sealed = agent.stderr.count("sealed batch")
        assert wait_for(lambda: sum(t.endswith("/telemetry") for t, _ in capture.messages)
                        >= sealed and sum(t.endswith("/events") for t, _ in capture.messages)
                        >= 5)
        messages = list(capture.messages)
    finally:
        capture.close()
    decoded = decode_all(messages, tmp_path / "vehicle.pub")
    assert not {LAT, LON} & decoded.keys_sent()
    by_type = {e.type: e for e in decoded.events if e.type != "trigger"}
    assert set(by_type["stop"].positions) == {"at"}
    assert set(by_type["trip_end"].positions) == {"end"}  # the start was in the zone
    for event in decoded.events:
        for lat, lon in event.positions.values():
            assert_position_may_leave(lat, lon)
        assert not {LAT, LON} & set(event.data.get("samples", {}))
