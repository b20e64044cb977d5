"""Tire-pressure and suspension-height sensors on a serial port (pyserial), any protocol of
agent/sources/sensor_protocols.py.

The port is opened by path (a udev symlink such as /dev/ttyTPMS survives re-enumeration). When
the device disappears (USB unplugged: reads fail or the path is gone) the port is closed and
reopened with back-off, each attempt counted in `health.reconnects`; the `connected` gauge tells
whether it is open now. Every rejected piece of input is counted by reason.
"""

from __future__ import annotations

import logging
import threading
import time

import serial

from agent.decoding.values import Reading
from agent.sources.base import OnFrames, OnIdle, Source
from agent.sources.health import SourceHealth
from agent.sources.link import Backoff, Staleness
from agent.sources.sensor_protocols import Measurement, SensorProtocol

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.25
READ_CHUNK = 4096


class SerialSensorSource(Source):
    def __init__(self, name: str, health: SourceHealth, port: str, baudrate: int,
                 protocol: type[SensorProtocol], stale_after: float) -> None:
        super().__init__(name, health)
        self._port = port
        self._baudrate = baudrate
        self._protocol = protocol
        self._stale_after = stale_after

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        backoff = Backoff()
        staleness = Staleness(self.health, self._stale_after)
        self.health.state["connected"] = 0
        logged_outage = False
        while not stop.is_set():
            try:
                port = serial.Serial(self._port, self._baudrate, timeout=READ_TIMEOUT)
            except (serial.SerialException, OSError, ValueError) as exc:
                if not logged_outage:
                    log.error("%s: cannot open %s: %s; retrying with back-off",
                              self.name, self._port, exc)
                    logged_outage = True
                self.health.reconnects += 1
                staleness.check()
                backoff.wait(on_idle, stop)
                continue
            log.info("%s: reading %s at %d baud (%s)", self.name, self._port,
                     self._baudrate, self._protocol.name)
            logged_outage = False
            backoff.reset()
            self.health.state["connected"] = 1
            try:
                self._receive(port, self._protocol(), staleness, on_frames, on_idle, stop)
            except (serial.SerialException, OSError) as exc:
                log.error("%s: %s failed: %s; reopening", self.name, self._port, exc)
                self.health.reconnects += 1
            finally:
                self.health.state["connected"] = 0
                port.close()

    def _receive(self, port: serial.Serial, protocol: SensorProtocol, staleness: Staleness,
                 on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        health = self.health
        while not stop.is_set():
            data = port.read(max(1, min(port.in_waiting, READ_CHUNK)))
            now = time.time()
            if not data:
                staleness.check()
                on_idle(now)
                continue
            for decoded in protocol.feed(data):
                if isinstance(decoded, Measurement):
                    staleness.fresh()
                    on_frames((Reading(now, decoded.quantity, decoded.value),))
                else:
                    if decoded.reason not in health.rejected:
                        log.warning("%s: dropped input from %s (%s); further ones are counted, "
                                    "not logged", self.name, self._port, decoded.reason)
                    health.reject(decoded.reason)
            staleness.check()
