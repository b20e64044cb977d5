"""Active diagnostics end to end: the real agent polls simulated ECUs (can-isotp and udsoncan
on both sides of a python-can virtual bus, in the agent's process: offboard/devkit/ecu_sim.py)
and the backend, through a real Mosquitto with mutual TLS, verifies batches holding the PIDs
and DIDs, and the DTC and battery-health events. The battery controller answers busy twice
and sends "response pending" before every answer; one DID is refused (NRC 0x31) and one ECU
is missing (timeouts): each is handled and counted in `diag status --json`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

from tests.helpers.agent_setup import (
    REPO,
    on_virtual_bus,
    start_backend,
    write_agent_config,
)
from tests.helpers.support import wait_until

CATALOGUE = REPO / "dbc" / "example_dids.toml"


def diagnostics(control: str) -> str:
    def request(name: str, service: str, period: float = 1.0, **keys: object) -> str:
        lines = [f'name = "{name}"', 'bus = "can0"', f'service = "{service}"',
                 f"period = {period}"]
        lines += [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}"
                  for key, value in keys.items()]
        return "[[diagnostics.requests]]\n" + "\n".join(lines) + "\n"

    battery = {"request_id": 0x7E4, "response_id": 0x7EC}
    return f"""
[control]
socket = "{control}"

[events]
enabled = true

[events.battery]
cell_spread = "can0.diag.cell_voltage_spread"
max_temperature = "can0.diag.module_temperature_max"
min_temperature = "can0.diag.module_temperature_min"
spread_max_mv = 5.0
hold = 1.0

[diagnostics]
catalogue = "{CATALOGUE}"
budget = 20.0
timeout = 1.0
backoff_max = 2.0

{request("rpm", "obd_pid", pid=0x0C)}
{request("speed", "obd_pid", pid=0x0D, addressing="functional")}
{request("coolant", "obd_pid", pid=0x05)}
{request("ambient", "obd_pid", pid=0x46, request_id=0x7E1, response_id=0x7E9)}
{request("cells", "read_did", did=0x0101, **battery)}
{request("temperatures", "read_did", did=0x0102, **battery)}
{request("health", "read_did", did=0x0103, **battery)}
{request("insulation", "read_did", did=0x0104, **battery)}
{request("engine", "read_dtc", period=2.0)}
"""


def agent_config(tmp_path, mosquitto, dev_pki, channel):
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                window=3.0, extra=diagnostics(str(tmp_path / "control.sock")))
    return on_virtual_bus(config, channel)


def diag(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "diag", *args, "--config",
                           str(config)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def status(config) -> dict | None:
    result = diag(config, "status", "--json")
    if not result.stdout.strip().startswith("{"):
        return None
    document = json.loads(result.stdout)
    return document if "sources" in document else None  # not running yet: no sources


def test_pids_dids_and_dtc_events_arrive_verified_with_etiquette_counted(tmp_path, mosquitto,
                                                                         dev_pki):
    channel = f"diag-{uuid.uuid4().hex}"
    config = agent_config(tmp_path, mosquitto, dev_pki, channel)
    rows_path = tmp_path / "rows.jsonl"
    report_path = tmp_path / "report.json"
    backend = start_backend(mosquitto.port, dev_pki.client("backend"),
                            f"demo-0001={tmp_path / 'vehicle.pub'}",
                            "--format", "jsonl", "--output", str(rows_path),
                            "--timeout", "300", "--report", str(report_path))
    log = (tmp_path / "agent.log").open("w")
    agent = subprocess.Popen(
        [sys.executable, "-m", "devkit.ecu_sim", "--channel", channel, "--busy", "battery=2",
         "--pending", "battery=1", "--", "run", "--config", str(config)],
        stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)})

    def rows() -> list[dict]:
        if not rows_path.exists():
            return []
        return [json.loads(line) for line in rows_path.read_text().splitlines()
                if line.endswith("}")]

    def everything_arrived() -> bool:
        got = rows()
        signals = {row["signal"] for row in got if "signal" in row}
        events = {(row["event"], row["data"].get("code") or row["data"].get("condition"))
                  for row in got if "event" in row}
        return ({"can0.diag.engine_speed", "can0.diag.vehicle_speed",
                 "can0.diag.cell_voltage_8", "can0.diag.state_of_health",
                 "can0.diag.engine_dtcs"} <= signals
                and {("dtc", "P0301"), ("dtc", "P0420"), ("battery", "cell_spread")} <= events)

    def counted() -> dict | None:
        document = status(config)
        if document is None:
            return None
        diag = next(s for s in document["sources"] if s["name"] == "can0.diag")
        # A counter shows once its first event happened: absent is zero.
        done = (diag.get("busy", 0) >= 2 and diag.get("response_pending", 0) >= 3
                and diag.get("timeouts", 0) >= 1 and diag.get("negative.0x31", 0) >= 1)
        return diag if done else None

    try:
        counters = wait_until(counted, timeout=120)
        assert counters, (tmp_path / "agent.log").read_text()[-3000:]
        assert wait_until(everything_arrived, timeout=120), (
            (tmp_path / "agent.log").read_text()[-3000:])
        check_technician_commands(config)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        log.close()
    backend.send_signal(signal.SIGTERM)
    out, err = backend.communicate(timeout=60)
    assert backend.returncode == 0, err[-3000:]

    report = json.loads(report_path.read_text())
    assert report["verified"] >= 1 and report["rejected"] == 0
    got = rows()
    values = {row["signal"]: row["value"] for row in got if "signal" in row}
    assert values["can0.diag.engine_speed"] == 3000
    assert values["can0.diag.vehicle_speed"] == 88
    assert values["can0.diag.coolant_temperature"] == 90
    assert values["can0.diag.cell_voltage_1"] == 3700
    assert values["can0.diag.cell_voltage_spread"] == 7
    assert abs(values["can0.diag.state_of_health"] - 94.3) < 1e-9
    assert values["can0.diag.engine_dtcs"] == 2
    assert "can0.diag.ambient_temperature" not in values  # no ECU answers on 0x7E1
    dtcs = {row["data"]["code"]: row["data"] for row in got if row.get("event") == "dtc"}
    assert dtcs["P0301"]["state"] == "confirmed" and dtcs["P0301"]["change"] == "new"
    assert dtcs["P0301"]["description"] == "Cylinder 1 misfire detected"
    assert dtcs["P0420"]["state"] == "pending"
    assert counters["negative"] >= 3  # two busy and the refused DID, at least


def check_technician_commands(config) -> None:
    """`diag dtc` and `diag request`, against the running agent."""
    dtc = diag(config, "dtc", "--json")
    assert dtc.returncode == 1, dtc.stderr  # a confirmed code
    codes = {code["code"]: code for ecu in json.loads(dtc.stdout)["ecus"]
             for code in ecu["codes"]}
    assert codes["P0301"]["state"] == "confirmed"
    assert codes["P0301"]["description"] == "Cylinder 1 misfire detected"
    assert codes["P0420"]["state"] == "pending"
    table = diag(config, "dtc")
    assert "P0301" in table.stdout and "Cylinder 1 misfire" in table.stdout

    vin = diag(config, "request", "--bus", "can0", "--did", "F190", "--json")
    assert vin.returncode == 0, vin.stdout + vin.stderr
    assert json.loads(vin.stdout)["text"] == "WDEMO000000000001"
    soh = json.loads(diag(config, "request", "--bus", "can0", "--did", "0103",
                          "--request-id", "7E4", "--response-id", "7EC", "--json").stdout)
    assert abs(soh["values"]["state_of_health"] - 94.3) < 1e-9
    rpm = diag(config, "request", "--bus", "can0", "--pid", "0C")
    assert rpm.returncode == 0 and "engine_speed = 3000" in rpm.stdout
    refused = diag(config, "request", "--bus", "can0", "--did", "4242", "--json")
    assert refused.returncode == 1 and "0x31" in json.loads(refused.stdout)["error"]
    unknown_bus = json.loads(diag(config, "request", "--bus", "can7", "--did", "F190",
                                  "--json").stdout)
    assert "no diagnostics run on bus 'can7'" in unknown_bus["error"]
