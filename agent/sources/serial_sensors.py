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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import serial

from agent.config.source import SourceConfig
from agent.sources.base import OnFrames, OnIdle, Reading, Source
from agent.sources.catalogue import Catalogue
from agent.sources.health import SourceHealth
from agent.sources.link import (
    Backoff,
    Staleness,
    check_device_source,
    link_warnings,
    rejected_warnings,
)
from agent.sources.registry import ErrorAt, SourceType
from agent.sources.sensor_protocols import PROTOCOLS, Measurement, SensorProtocol, protocol_class

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


@dataclass(frozen=True)
class SerialConfig(SourceConfig):
    """Tire-pressure and suspension sensors on a serial line (docs/sensors.md)."""

    port: str = ""  # the device, e.g. "/dev/ttyUSB0"
    baudrate: int = 9600
    protocol: str = "nmea"


def _check(config: SerialConfig, error: ErrorAt) -> None:
    check_device_source(config, error)
    if not config.port:
        raise error("port", "the serial device, e.g. \"/dev/ttyUSB0\"")
    if config.baudrate <= 0:
        raise error("baudrate", "must be a positive number")
    if config.protocol not in PROTOCOLS:
        raise error("protocol", f"unknown protocol {config.protocol!r}; known: "
                    f"{', '.join(sorted(PROTOCOLS))}")


def _open(config: SerialConfig, can_filters: Sequence[dict[str, Any]],
          health: SourceHealth) -> SerialSensorSource:
    return SerialSensorSource(config.name, health, config.port, config.baudrate,
                              protocol_class(config.protocol), config.stale_after)


def _where(config: SerialConfig) -> str:
    return f"{config.port} ({config.protocol}, {config.baudrate} baud)"


def _catalogue(config: SerialConfig) -> Catalogue:
    return protocol_class(config.protocol).catalogue


def _warnings(source: Mapping[str, Any]) -> list[str]:
    return link_warnings(source) + rejected_warnings(source)


SOURCE_TYPE = SourceType(name="serial", config=SerialConfig, check=_check, open=_open,
                         where=_where, warnings=_warnings, catalogue=_catalogue)
