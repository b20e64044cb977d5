"""A clear enabled by a signed config update, end to end: the real agent polls the simulated
engine ECU (in the agent's process, offboard/devkit/ecu_sim.py); a backend publishes a signed
update through a real Mosquitto with mutual TLS whose own [[diagnostics.requests]] enable
`clear_dtc` for one named request; the agent verifies and applies it, clears the ECU's codes
once, and the backend receives each code's `dtc` event `cleared`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

from agent.wire.keys import generate_key_pair
from tests.helpers.agent_setup import (
    REPO,
    on_virtual_bus,
    start_backend,
    write_agent_config,
)
from tests.helpers.support import wait_until
from tests.integration.test_diagnostics_end_to_end import diag, status
from tests.integration.test_ota import Backend, update

READ_DTCS = """
[[diagnostics.requests]]
name = "engine"
bus = "can0"
service = "read_dtc"
period = 2.0
"""
CLEAR = """
[[diagnostics.requests]]
name = "clear_engine"
bus = "can0"
service = "clear_dtc"
allow_write = true
"""


def agent_config(tmp_path, mosquitto, dev_pki, channel):
    generate_key_pair(tmp_path / "backend.key")
    extra = f"""
[control]
socket = "{tmp_path / 'control.sock'}"

[events]
enabled = true

[diagnostics]
budget = 20.0
timeout = 1.0
{READ_DTCS}
[ota]
trusted_keys = ["{tmp_path / 'backend.pub'}"]
grace_period = 2.0

[state]
directory = "state"
"""
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                window=1.0, extra=extra)
    return on_virtual_bus(config, channel)


def test_a_signed_update_clears_the_codes_once_and_they_arrive_cleared(tmp_path, mosquitto,
                                                                        dev_pki):
    channel = f"clear-{uuid.uuid4().hex}"
    config = agent_config(tmp_path, mosquitto, dev_pki, channel)
    rows_path = tmp_path / "rows.jsonl"
    fleet = start_backend(mosquitto.port, dev_pki.client("backend"),
                          f"demo-0001={tmp_path / 'vehicle.pub'}", "--format", "jsonl",
                          "--output", str(rows_path), "--timeout", "300")
    publisher = Backend(mosquitto.port, dev_pki.client("backend"))
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "devkit.ecu_sim", "--channel", channel, "--", "run",
         "--config", str(config)], stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)})

    def dtc_events() -> set[tuple[str, str]]:
        if not rows_path.exists():
            return set()
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()
                if line.endswith("}")]
        return {(row["data"]["code"], row["data"]["change"]) for row in rows
                if row.get("event") == "dtc"}

    def diag_counters() -> dict | None:
        document = status(config)
        if document is None:
            return None
        return next((s for s in document["sources"] if s["name"] == "can0.diag"), None)

    def agent_log() -> str:
        return (tmp_path / "agent.log").read_text()[-3000:]

    try:
        new = {("P0301", "new"), ("P0420", "new")}
        assert wait_until(lambda: new <= dtc_events(), 120), agent_log()
        publisher.publish(update(tmp_path, 2, READ_DTCS + CLEAR, vehicle="demo-0001"))
        ack = publisher.next_ack(0, timeout=120)
        assert ack["outcome"] == "applied" and ack["version"] == 2, (ack, agent_log())
        cleared = {("P0301", "cleared"), ("P0420", "cleared")}
        assert wait_until(lambda: cleared <= dtc_events(), 120), agent_log()
        counters = wait_until(lambda: (c := diag_counters()) and c.get("writes", 0) >= 1 and c, 60)
        assert counters["writes_positive"] == 1 and counters["writes"] == 1, counters
        codes = json.loads(diag(config, "dtc", "--json").stdout)
        assert all(not ecu["codes"] for ecu in codes["ecus"]), codes
        ledger = json.loads((tmp_path / "state" / "diagnostics" / "writes.json").read_text())
        assert ledger == {"clear_engine": 2}
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        log.close()
        publisher.close()
        fleet.send_signal(signal.SIGTERM)
        fleet.communicate(timeout=60)
    assert "clear_engine (clear_dtc, config version 2): done (positive response)" in \
        (tmp_path / "agent.log").read_text()
