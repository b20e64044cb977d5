"""Active diagnostics on real SocketCAN through the kernel's ISO-TP module (can-isotp.ko):
the agent's requests go out on CAN_ISOTP sockets, the simulated ECUs answer through
can-isotp over a python-can socketcan bus on the same vcan0."""

from __future__ import annotations

from devkit.ecu_sim import EcuBench, battery_ecu, engine_ecu

from agent.diagnostics.board import BOARD
from agent.diagnostics.transport import kernel_isotp_available
from tests.helpers.agent_setup import BUNDLED_DBC, REPO
from tests.vcan.conftest import running_agent, wait_for, write_config

BATTERY = "request_id = 0x7E4\nresponse_id = 0x7EC"


def test_pids_dids_and_codes_through_kernel_isotp_with_etiquette_counted(tmp_path):
    assert kernel_isotp_available(), "the kernel's can-isotp module did not load"
    config = write_config(tmp_path, f"""
[[sources]]
name = "can0"
type = "socketcan"
channel = "vcan0"
dbc = ["{BUNDLED_DBC}"]

[diagnostics]
catalogue = "{REPO / 'dbc' / 'example_dids.toml'}"
transport = "kernel"
budget = 20.0
timeout = 0.5
backoff_max = 2.0

[[diagnostics.requests]]
name = "rpm"
bus = "can0"
service = "obd_pid"
pid = 0x0C
period = 1.0

[[diagnostics.requests]]
name = "speed"
bus = "can0"
service = "obd_pid"
pid = 0x0D
addressing = "functional"
period = 1.0

[[diagnostics.requests]]
name = "cells"
bus = "can0"
service = "read_did"
did = 0x0101
{BATTERY}
period = 1.0

[[diagnostics.requests]]
name = "insulation"
bus = "can0"
service = "read_did"
did = 0x0104
{BATTERY}
period = 1.0

[[diagnostics.requests]]
name = "ambient"
bus = "can0"
service = "obd_pid"
pid = 0x46
request_id = 0x7E1
response_id = 0x7E9
period = 1.0

[[diagnostics.requests]]
name = "engine"
bus = "can0"
service = "read_dtc"
period = 1.0
""")
    battery = battery_ecu()
    battery.behaviour.busy = 2
    battery.behaviour.pending = 1
    with EcuBench("socketcan", "vcan0", [engine_ecu(), battery]), \
            running_agent(config) as agent:
        store = agent.stores["can0.diag"]
        health = store.health

        def values() -> dict[str, float]:
            return {p.key: v for p, v, _ in store.current_values()}

        wanted = {"can0.diag.engine_speed", "can0.diag.vehicle_speed",
                  "can0.diag.cell_voltage_8", "can0.diag.engine_dtcs"}
        wait_for(lambda: wanted <= values().keys(), "PIDs, DIDs and codes", 120,
                 state=lambda: (values(), health.counters()))
        wait_for(lambda: (health.state["busy"] >= 2 and health.state["timeouts"] >= 1
                          and health.state.get("negative.0x31", 0) >= 1
                          and health.state["response_pending"] >= 1),
                 "busy, timeout, refusal and pending counted", 120,
                 state=health.counters)
        got = values()
        counters = health.counters()
    assert counters["kernel_isotp"] == 1
    assert got["can0.diag.engine_speed"] == 3000 / 0.25  # raw: 0.25 rpm per bit
    assert got["can0.diag.vehicle_speed"] == 88
    assert got["can0.diag.cell_voltage_8"] == 3707
    assert got["can0.diag.engine_dtcs"] == 2
    codes = {report.request: report.codes for report in BOARD.reports()}
    assert codes["engine"] == {"P0301": 0x09, "P0420": 0x04}
