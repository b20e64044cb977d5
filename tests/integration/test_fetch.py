"""Fetch on demand through a real Mosquitto with mutual TLS: a running agent replaying the
bundled drive receives signed requests, acks them, and sends the ring's look-back as a
verified `fetch` event, filtered by the owner's consent; replays and expired requests are
refused and counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.pki import TlsFiles
from fleet.backend import load_keyring

from agent.events.codec import EventBody, open_event
from agent.events.fetch import CONTENT_TYPE, sign_fetch
from agent.runtime.control import request
from agent.wire.cose import Signer
from agent.wire.keys import generate_key_pair, load_private_key
from tests.helpers.agent_setup import REPO, start_backend, write_agent_config
from tests.helpers.capture import Capture
from tests.helpers.support import wait_until
from tests.integration.test_ota import VEHICLE, spawn, stop

CELLS = "can0.BMS_CellStats.*"                 # technical: sent at vehicle-health
SPEED = "can0.ESP_VehicleSpeed.VehicleSpeed"   # driving: withheld at vehicle-health
TELEMETRY = f"fleet/{VEHICLE}/telemetry"
EVENTS = f"fleet/{VEHICLE}/events"
REQUESTS = f"fleet/{VEHICLE}/fetch"
ACKS = f"fleet/{VEHICLE}/fetch/ack"


class Backend:
    """Collects telemetry, events and fetch acks; publishes fetch requests (QoS 1)."""

    def __init__(self, port: int, tls: TlsFiles) -> None:
        self.capture = Capture(port, tls, [TELEMETRY, EVENTS, ACKS])

    @property
    def telemetry(self) -> int:
        return self.capture.count(TELEMETRY)

    def publish(self, envelope: bytes) -> None:
        self.capture.publish(REQUESTS, envelope)

    def next_ack(self, seen: int) -> dict:
        return json.loads(self.capture.wait_for(ACKS, seen))

    def fetch_events(self, vehicle_pub: Path) -> list[EventBody]:
        keyring = load_keyring([vehicle_pub])[0]
        bodies = [open_event(envelope, keyring) for envelope in self.capture.payloads(EVENTS)]
        return [body for body in bodies if body.type == "fetch"]

    def close(self) -> None:
        self.capture.close()


def fetch(directory: Path, signals: list[str], *, expires_in: int = 300,
          issued_ago: int = 0) -> bytes:
    signer = Signer(load_private_key(directory / "backend.key"), CONTENT_TYPE)
    now = int(time.time())
    return sign_fetch(signer, vehicle=VEHICLE, signals=signals, last_ms=5000,
                      issued_at=now - issued_ago, expires_at=now + expires_in)


def test_a_fetch_request_round_trips_and_replays_are_refused(tmp_path, mosquitto, dev_pki):
    generate_key_pair(tmp_path / "backend.key")
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client(VEHICLE), window=1.0, speed=4.0,
        extra=f"drain_rate = 0\n\n[ota]\ntrusted_keys = [\"{tmp_path / 'backend.pub'}\"]\n"
              "\n[state]\ndirectory = \"state\"\n"
              "\n[privacy]\nconsent = \"vehicle-health\"\nconsent_version = 1\n"
              # Events read the speed (a `driving` signal): the ring holds it, the consent
              # does not let it out.
              "\n[events]\nenabled = true\n")
    config.write_text(config.read_text().replace("rebase = false", "rebase = true\nloop = true"))
    backend_tls = dev_pki.client("backend")
    backend = Backend(mosquitto.port, backend_tls)
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    try:
        # A batch from the agent comes after its subscriptions on the same connection: the
        # broker has them once it passes the batch on.
        assert wait_until(lambda: backend.telemetry >= 3, 40), log.read_text()[-2000:]
        # The bundled drive's BMS wakes 13 s in: wait until the ring holds that much.
        socket = tmp_path / "state" / "control.sock"
        assert wait_until(lambda: request(socket, "status")["ring"]["lookback_s"] >= 20, 60)
        # The backend's own tools: tools/fetch-request signs, publishes and prints the ack;
        # tools/backend verifies the fetch event and writes it as a row.
        rows = tmp_path / "rows.jsonl"
        fleet_backend = start_backend(mosquitto.port, backend_tls,
                                      f"{VEHICLE}={tmp_path / 'vehicle.pub'}",
                                      "--format", "jsonl", "--output", str(rows))
        good = tmp_path / "request.cose"
        sent = subprocess.run(
            [sys.executable, "-m", "fleet.fetch_request", "--signing-key",
             str(tmp_path / "backend.key"), "--vehicle", VEHICLE, "--signals", CELLS, SPEED,
             "--last", "5s", "--output", str(good), "--host", "127.0.0.1", "--port",
             str(mosquitto.port), "--ca-cert", str(backend_tls.ca_cert), "--cert",
             str(backend_tls.cert), "--key", str(backend_tls.key), "--wait-ack", "40"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert sent.returncode == 0, sent.stderr
        ack = json.loads(sent.stdout)
        assert ack["outcome"] == "accepted" and ack["reason"] is None, ack
        assert backend.next_ack(0) == {key: ack[key] for key in ack if key != "vehicle"}
        assert wait_until(lambda: backend.fetch_events(tmp_path / "vehicle.pub"), 30), \
            log.read_text()[-2000:]
        event = backend.fetch_events(tmp_path / "vehicle.pub")[0]

        def fetch_rows() -> list[dict]:
            return [row for line in rows.read_text().splitlines() if line.endswith("}")
                    and (row := json.loads(line)).get("event") == "fetch"]

        assert wait_until(lambda: rows.exists() and fetch_rows(), 30)
        assert fetch_rows()[0]["data"] == event.data
        fleet_backend.send_signal(signal.SIGTERM)
        assert fleet_backend.wait(60) == 0
        assert event.vehicle == VEHICLE
        assert event.data["request"] == ack["request"]
        assert event.privacy["consent"] == "vehicle-health"
        samples = event.data["samples"]
        assert SPEED not in samples  # consent withholds `driving` signals
        assert samples and all(key.startswith("can0.BMS_CellStats.") for key in samples)
        assert "can0.BMS_CellStats.MaxCellVoltage" in samples
        assert event.data["to_ms"] - event.data["from_ms"] == 5000
        assert event.data["truncated"] is False
        assert event.data["total"] == sum(len(rows) for rows in samples.values())
        for rows in samples.values():
            assert rows and all(event.data["from_ms"] <= t <= event.data["to_ms"]
                                for t, _ in rows)
            assert [t for t, _ in rows] == sorted(t for t, _ in rows)

        good = good.read_bytes()
        backend.publish(good)  # captured off the broker and played again
        replayed = backend.next_ack(1)
        assert (replayed["outcome"], replayed["reason"]) == ("rejected", "replayed")
        backend.publish(fetch(tmp_path, [CELLS], expires_in=-5, issued_ago=60))
        expired = backend.next_ack(2)
        assert (expired["outcome"], expired["reason"]) == ("rejected", "expired")
        backend.publish(b"\xa0not a request")
        assert backend.next_ack(3)["reason"] == "malformed"
        status = request(socket, "status")
        assert status["fetch"] == {"accepted": 1, "rejected": {
            "replayed": 1, "expired": 1, "malformed": 1}}
        assert len(backend.fetch_events(tmp_path / "vehicle.pub")) == 1
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
        backend.close()
    # The id is remembered across a restart: the same envelope is still a replay.
    restarted = spawn(config, tmp_path / "restart.log")
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    try:
        assert wait_until(lambda: backend.telemetry >= 2, 40)
        backend.publish(good)
        assert backend.next_ack(0)["reason"] == "replayed"
        stop(restarted)
    finally:
        if restarted.poll() is None:
            restarted.kill()
        backend.close()
