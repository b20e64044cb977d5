"""Requests wait while the ignition is off, but for those configured to ask anyway."""

import uuid
from pathlib import Path

import can
from devkit.ecu_sim import EcuBench, battery_ecu, engine_ecu

from agent.decoding.dbc import load_dbc
from agent.diagnostics.board import DtcBoard
from agent.diagnostics.config import DiagnosticsConfig, RequestConfig
from agent.diagnostics.ignition import IgnitionWatch
from agent.diagnostics.items import DataItem
from agent.diagnostics.pids import PIDS
from agent.diagnostics.poller import PlannedRequest, Poller
from agent.diagnostics.transport import BusAddress, Connector
from agent.sources.health import SourceHealth
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until

DBC = Path(__file__).parents[3] / "dbc" / "vehicle.dbc"


def ignition_frame(state: int) -> can.Message:
    message = load_dbc([DBC]).database.get_message_by_name("VCU_Status")
    signals = {signal.name: 0 for signal in message.signals}
    signals["IgnitionState"] = state
    return can.Message(arbitration_id=message.frame_id, is_extended_id=False,
                       data=message.encode(signals, strict=False))


def test_only_requests_allowed_while_off_are_asked_until_the_ignition_is_on():
    channel = f"ign-{uuid.uuid4().hex}"
    address = BusAddress("virtual", channel)
    with EcuBench("virtual", channel, [engine_ecu(), battery_ecu()]), \
            can.Bus(interface="virtual", channel=channel) as vehicle:
        watch = IgnitionWatch(address, [DBC], "VCU_Status", "IgnitionState", ("On", "Start"))
        try:
            assert watch.on()  # unknown: asked
            vehicle.send(ignition_frame(0))
            assert wait_until(lambda: not watch.on(), 10)
            parked = RequestConfig("soh", "can0", "read_did", did=0x0103, request_id=0x7E4,
                                   response_id=0x7EC, period=0.05, when_ignition_off=True)
            requests = [PlannedRequest(RequestConfig("rpm", "can0", "obd_pid", pid=0x0C,
                                                     period=0.05), PIDS[0x0C]),
                        PlannedRequest(parked, DataItem("state_of_health", size=2,
                                                        scale=0.1))]
            health = SourceHealth()
            poller = Poller("can0", requests, DiagnosticsConfig(budget=100),
                            Connector(address, "python"), health, ignition_on=watch.on,
                            board=DtcBoard())
            with RunningSource(poller) as running:
                assert wait_until(lambda: len(running.values("state_of_health")) >= 3, 20)
                assert not running.values("engine_speed")
                vehicle.send(ignition_frame(2))
                assert wait_until(lambda: running.values("engine_speed"), 20)
        finally:
            watch.close()
