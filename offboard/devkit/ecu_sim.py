"""Simulated ECUs that answer diagnostic requests, on the same libraries as the agent.

The server side of what agent/diagnostics/ asks: can-isotp carries the requests in and the
answers out (a NotifierBasedCanStack per address, on any python-can bus: a virtual bus in
the tests, vcan0 in the VM), and udsoncan's Response objects encode the answers. Two ECUs
make the example vehicle: an engine ECU with OBD-II PIDs and trouble codes, and a battery
controller with cell voltages, temperatures and state of health by data identifier.
Like a real ECU it also takes ClearDiagnosticInformation (0x14: its trouble codes are gone)
and WriteDataByIdentifier (0x2E) for the DIDs it lists as writable, so that the agent's
signed-config clears and writes can be tested against it.

Each ECU can be told to misbehave, for the tests of bus etiquette: answer "busy" (NRC 0x21)
some times, send "response pending" (NRC 0x78) before each answer, or stay silent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import can
import isotp
from udsoncan import Response
from udsoncan.services import (
    ClearDiagnosticInformation,
    ReadDataByIdentifier,
    ReadDTCInformation,
    WriteDataByIdentifier,
)

from agent.diagnostics.obd import ObdCurrentData

log = logging.getLogger(__name__)

FUNCTIONAL_ID = 0x7DF
PENDING_DELAY = 0.05  # s between "response pending" and the answer (well inside P2*)
DTC_AVAILABILITY_MASK = 0xFF
ISOTP_PARAMS = {"tx_padding": 0x55, "blocksize": 0, "stmin": 0}


@dataclass
class Behaviour:
    """How an ECU misbehaves now; tests change it while it runs."""

    busy: int = 0  # answer the next `busy` requests with NRC 0x21
    pending: int = 0  # send NRC 0x78 this many times before every answer
    silent: bool = False  # answer nothing (the client times out)


@dataclass
class EcuData:
    pids: dict[int, bytes] = field(default_factory=dict)  # OBD-II mode 01: PID → data
    dids: dict[int, bytes] = field(default_factory=dict)  # UDS 0x22: DID → data
    dtcs: dict[int, int] = field(default_factory=dict)  # UDS 0x19: 3-byte DTC → status
    writable: set[int] = field(default_factory=set)  # DIDs that 0x2E may write


class SimulatedEcu:
    """One ECU on `request_id`/`response_id` (and the functional 0x7DF when `functional`)."""

    def __init__(self, name: str, request_id: int, response_id: int, data: EcuData, *,
                 functional: bool = False) -> None:
        self.name = name
        self.data = data
        self.behaviour = Behaviour()
        self.received: list[int] = []  # service IDs of every request, in order
        self._lock = threading.Lock()
        self._ids = [(request_id, response_id)]
        if functional:
            self._ids.append((FUNCTIONAL_ID, response_id))
        self._stacks: list[isotp.NotifierBasedCanStack] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self, bus: can.BusABC, notifier: can.Notifier) -> None:
        for rxid, txid in self._ids:
            address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=txid, rxid=rxid)
            stack = isotp.NotifierBasedCanStack(bus, notifier, address=address,
                                                params=dict(ISOTP_PARAMS))
            stack.start()
            thread = threading.Thread(target=self._serve, args=(stack,), daemon=True,
                                      name=f"ecu-{self.name}-{rxid:03X}")
            thread.start()
            self._stacks.append(stack)
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for stack in self._stacks:
            stack.stop()

    def set_dtcs(self, dtcs: Mapping[int, int]) -> None:
        with self._lock:
            self.data.dtcs = dict(dtcs)

    def _serve(self, stack: isotp.NotifierBasedCanStack) -> None:
        while not self._stop.is_set():
            request = stack.recv(block=True, timeout=0.1)
            if not request:
                continue
            with self._lock:
                self.received.append(request[0])
                behaviour = self.behaviour
                if behaviour.silent:
                    continue
                if behaviour.busy:
                    behaviour.busy -= 1
                    stack.send(_negative(request[0], 0x21))
                    continue
                pending = behaviour.pending
                answer = self._answer(bytes(request))
            for _ in range(pending):
                stack.send(_negative(request[0], 0x78))
                self._stop.wait(PENDING_DELAY)
            stack.send(answer)

    def _answer(self, request: bytes) -> bytes:
        sid, data = request[0], request[1:]
        if sid == ObdCurrentData.request_id() and len(data) == 1 and data[0] in self.data.pids:
            return Response(ObdCurrentData, Response.Code.PositiveResponse,
                            data=data + self.data.pids[data[0]]).get_payload()
        if sid == ReadDataByIdentifier.request_id() and len(data) == 2:
            did = int.from_bytes(data, "big")
            if did not in self.data.dids:
                return _negative(sid, Response.Code.RequestOutOfRange)
            return Response(ReadDataByIdentifier, Response.Code.PositiveResponse,
                            data=data + self.data.dids[did]).get_payload()
        if sid == ReadDTCInformation.request_id() and len(data) == 2 and data[0] == 0x02:
            mask = data[1]
            records = b"".join(dtc.to_bytes(3, "big") + bytes([status])
                               for dtc, status in sorted(self.data.dtcs.items())
                               if status & mask)
            return Response(ReadDTCInformation, Response.Code.PositiveResponse,
                            data=bytes([0x02, DTC_AVAILABILITY_MASK]) + records).get_payload()
        if sid == ClearDiagnosticInformation.request_id() and len(data) in (3, 4):
            group = int.from_bytes(data[:3], "big")
            # 0xFFFFFF is every code; any other group names one code here.
            self.data.dtcs = {} if group == 0xFFFFFF else {
                dtc: status for dtc, status in self.data.dtcs.items() if dtc != group}
            return Response(ClearDiagnosticInformation,
                            Response.Code.PositiveResponse).get_payload()
        if sid == WriteDataByIdentifier.request_id() and len(data) > 2:
            did = int.from_bytes(data[:2], "big")
            if did not in self.data.writable:
                return _negative(sid, Response.Code.RequestOutOfRange)
            self.data.dids[did] = bytes(data[2:])
            return Response(WriteDataByIdentifier, Response.Code.PositiveResponse,
                            data=data[:2]).get_payload()
        if sid in (ObdCurrentData.request_id(), ReadDataByIdentifier.request_id(),
                   ReadDTCInformation.request_id(), ClearDiagnosticInformation.request_id(),
                   WriteDataByIdentifier.request_id()):
            return _negative(sid, Response.Code.RequestOutOfRange)
        return _negative(sid, Response.Code.ServiceNotSupported)


def _negative(sid: int, code: int) -> bytes:
    return bytes([0x7F, sid, code])


class EcuBench:
    """ECUs on one python-can bus (its own Bus object and Notifier), started and stopped
    together: `with EcuBench(interface, channel, ecus): ...`."""

    def __init__(self, interface: str, channel: str, ecus: list[SimulatedEcu]) -> None:
        self.ecus = {ecu.name: ecu for ecu in ecus}
        self._bus = can.Bus(interface=interface, channel=channel)
        self._notifier = can.Notifier(self._bus, [], timeout=0.1)
        for ecu in ecus:
            ecu.start(self._bus, self._notifier)

    def __enter__(self) -> EcuBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ecu in self.ecus.values():
            ecu.stop()
        self._notifier.stop()
        self._bus.shutdown()


# The example vehicle (docs/diagnostics.md, dbc/example_dids.toml).
ENGINE_IDS = (0x7E0, 0x7E8)
BATTERY_IDS = (0x7E4, 0x7EC)
P0301, P0420 = 0x030100, 0x042000
REPAIR_SHOP_DID = 0xF198  # repairShopCodeOrTesterSerialNumber (ISO 14229-1): writable
CELLS = 8


def engine_ecu() -> SimulatedEcu:
    """3000 rpm, 88 km/h, coolant 90 °C, fuel 50 %; P0301 confirmed, P0420 pending; the
    repair shop code (DID 0xF198) writable."""
    data = EcuData(pids={0x0C: (12000).to_bytes(2, "big"), 0x0D: bytes([88]),
                         0x05: bytes([130]), 0x2F: bytes([128])},
                   dids={0xF190: b"WDEMO000000000001", REPAIR_SHOP_DID: bytes(4)},
                   dtcs={P0301: 0x09, P0420: 0x04}, writable={REPAIR_SHOP_DID})
    return SimulatedEcu("engine", *ENGINE_IDS, data, functional=True)


def cell_voltages(millivolts: list[int]) -> bytes:
    return b"".join(mv.to_bytes(2, "big") for mv in millivolts)


def battery_ecu(cells_mv: list[int] | None = None) -> SimulatedEcu:
    """Cell voltages (DID 0x0101, mV), module temperatures (0x0102, °C + 40) and state of
    health (0x0103, 0.1 %)."""
    cells = cells_mv or [3700 + index for index in range(CELLS)]
    data = EcuData(dids={0x0101: cell_voltages(cells),
                         0x0102: bytes([25 + 40, 27 + 40, 26 + 40, 28 + 40]),
                         0x0103: (943).to_bytes(2, "big"),
                         0xF190: b"WDEMO000000000001"})
    return SimulatedEcu("battery", *BATTERY_IDS, data)


def _behaviour(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    return name, int(count or 1)


def main(argv: list[str] | None = None) -> int:
    """`python -m devkit.ecu_sim [options] -- AGENT ARGS`: the example vehicle's ECUs on a
    python-can bus, and the agent's command line run in this process beside them (a virtual
    bus reaches only the process that opened it; on vcan0 the agent may run apart)."""
    import argparse

    from agent.cli import main as agent_main

    parser = argparse.ArgumentParser(prog="python -m devkit.ecu_sim", description=main.__doc__)
    parser.add_argument("--interface", default="virtual")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--busy", type=_behaviour, action="append", default=[],
                        metavar="ECU=N", help="answer the first N requests with NRC 0x21")
    parser.add_argument("--pending", type=_behaviour, action="append", default=[],
                        metavar="ECU=N", help="send NRC 0x78 N times before every answer")
    parser.add_argument("agent", nargs=argparse.REMAINDER, help="the agent's command line")
    args = parser.parse_args(argv)
    agent_args = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    with EcuBench(args.interface, args.channel, [engine_ecu(), battery_ecu()]) as bench:
        for name, count in args.busy:
            bench.ecus[name].behaviour.busy = count
        for name, count in args.pending:
            bench.ecus[name].behaviour.pending = count
        return agent_main(agent_args)


if __name__ == "__main__":
    raise SystemExit(main())
