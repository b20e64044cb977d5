"""ISO-TP connections for udsoncan: the kernel's CAN_ISOTP sockets or can-isotp over python-can.

On SocketCAN with the kernel's can-isotp module, each request/response ID pair is a kernel
ISO-TP socket (udsoncan's IsoTPSocketConnection): segmentation, flow control and timing
are the kernel's. Elsewhere (python-can virtual buses, slcan adapters, a kernel without the
module) can-isotp does the same in Python over a bus the agent opens for diagnostics only:
one python-can Notifier reads it and hands frames to one NotifierBasedCanStack per ID pair.
The listening source keeps its own socket, so a request never holds up its reading.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

import can
import isotp
from udsoncan.connections import BaseConnection, IsoTPSocketConnection, PythonIsoTpConnection

log = logging.getLogger(__name__)

# ISO-TP parameters: ISO 15765-2 defaults, padding as most ECUs expect (0xCC filler would
# do too); blocksize 0 lets an ECU send a long answer (96 cell voltages) in one go.
ISOTP_PARAMS = {"tx_padding": 0x55, "blocksize": 0, "stmin": 0, "wftmax": 0}


@dataclass(frozen=True)
class BusAddress:
    """Where a diagnostics bus is: python-can's interface and channel."""

    interface: str
    channel: str
    bitrate: int = 500_000


def kernel_isotp_available() -> bool:
    """Whether this kernel opens CAN_ISOTP sockets (module can-isotp loaded or loadable)."""
    if not hasattr(socket, "CAN_ISOTP"):
        return False
    try:
        socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_ISOTP).close()
    except OSError:
        return False
    return True


class Connector:
    """Makes a udsoncan connection for each request/response ID pair of one bus."""

    def __init__(self, bus: BusAddress, transport: str) -> None:
        self._bus = bus
        self.kernel = transport == "kernel" or (
            transport == "auto" and bus.interface == "socketcan" and kernel_isotp_available())
        self._can: can.BusABC | None = None
        self._notifier: can.Notifier | None = None

    @property
    def description(self) -> str:
        kind = "kernel ISO-TP" if self.kernel else "can-isotp"
        return f"{self._bus.interface}:{self._bus.channel} ({kind})"

    def connection(self, request_id: int, response_id: int) -> BaseConnection:
        address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=request_id,
                                rxid=response_id)
        if self.kernel:
            return IsoTPSocketConnection(self._bus.channel, address,
                                         tpsock=_kernel_socket())
        if self._can is None:
            self._can = can.Bus(interface=self._bus.interface, channel=self._bus.channel,
                                bitrate=self._bus.bitrate, receive_own_messages=False)
            self._notifier = can.Notifier(self._can, [], timeout=0.1)
        assert self._notifier is not None
        stack = isotp.NotifierBasedCanStack(self._can, self._notifier, address=address,
                                            params=dict(ISOTP_PARAMS))
        return PythonIsoTpConnection(stack)

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.stop()
        if self._can is not None:
            self._can.shutdown()
        self._can = self._notifier = None


def _kernel_socket() -> Any:
    sock = isotp.socket()
    sock.set_opts(txpad=ISOTP_PARAMS["tx_padding"])
    sock.set_fc_opts(bs=0, stmin=0)
    return sock
