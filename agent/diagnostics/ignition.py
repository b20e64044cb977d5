"""Whether the ignition is on, from the bus's own frames: requests wait while it is off.

An ECU woken by a request keeps the vehicle's networks awake and drains the 12 V battery, so
a request is asked while the ignition is off only when its config says so
(`when_ignition_off`). The ignition signal is [events] `ignition` (a DBC signal of this bus,
with `ignition_on` naming its "on" values): this watch opens its own socket filtered to that
one frame ID and keeps the latest value. Until a frame is seen the state is unknown and the
requests are asked: a vehicle whose ignition is not on this bus would never be asked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import can

from agent.decoding.dbc import load_dbc
from agent.diagnostics.transport import BusAddress

log = logging.getLogger(__name__)


class IgnitionWatch(can.Listener):
    def __init__(self, bus: BusAddress, dbc: Sequence[Path], message: str, signal: str,
                 on_values: Sequence[str]) -> None:
        database = load_dbc(list(dbc)).database
        self._message = database.get_message_by_name(message)
        self._signal = signal
        self._on_values = frozenset(on_values)
        self._state: bool | None = None
        self._bus = can.Bus(interface=bus.interface, channel=bus.channel, bitrate=bus.bitrate,
                            can_filters=[{"can_id": self._message.frame_id,
                                          "can_mask": 0x1FFFFFFF,
                                          "extended": self._message.is_extended_frame}])
        self._notifier = can.Notifier(self._bus, [self], timeout=0.25)

    def on(self) -> bool:
        """False only when the latest ignition frame said off."""
        return self._state is not False

    def on_message_received(self, msg: can.Message) -> None:
        if msg.arbitration_id != self._message.frame_id or msg.is_error_frame:
            return
        try:
            value = self._message.decode(bytes(msg.data), allow_truncated=True)[self._signal]
        except (KeyError, ValueError) as exc:  # a frame that does not decode says nothing
            log.debug("ignition frame not decoded: %s", exc)
            return
        state = str(value) in self._on_values
        if state != self._state:
            log.info("ignition %s: diagnostics %s", "on" if state else "off",
                     "polling" if state else "paused (but for when_ignition_off requests)")
        self._state = state

    def close(self) -> None:
        self._notifier.stop()
        self._bus.shutdown()
