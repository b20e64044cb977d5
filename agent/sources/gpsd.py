"""GPS from gpsd over its JSON socket protocol (the plain protocol, so nothing between us and
gpsd can hide a reconnect or a malformed report).

gpsd may be missing at start, restart, or lose its receiver (USB unplugged: it keeps the
socket open but reports no fix). The connection is retried with back-off, each attempt counted
in `health.reconnects`; gauges `connected`, `fix_mode` and `stale` tell the state, and every
dropped report is counted by reason. The GPS time of each fix goes to clock.GPS_TIME.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config.source import SourceConfig
from agent.runtime import clock
from agent.sources.base import OnFrames, OnIdle, Reading, Source
from agent.sources.gpsd_json import FIX_NAMES, GPS_CATALOGUE, MAX_REPORT, POSITION, parse_report
from agent.sources.health import SourceHealth
from agent.sources.link import (
    Backoff,
    Staleness,
    check_device_source,
    device_name,
    link_warnings,
    rejected_warnings,
)
from agent.sources.registry import ErrorAt, SourceType
from agent.sources.sensor_protocols import Rejected

log = logging.getLogger(__name__)

WATCH = b'?WATCH={"enable":true,"json":true};\n'
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 0.25


class GpsdSource(Source):
    def __init__(self, name: str, health: SourceHealth, host: str, port: int,
                 stale_after: float) -> None:
        super().__init__(name, health)
        self.host = host
        self.port = port
        self._stale_after = stale_after

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        backoff = Backoff()
        staleness = Staleness(self.health, self._stale_after)
        state = self.health.state
        state.update(connected=0, fix_mode=0)
        logged_outage = False
        while not stop.is_set():
            try:
                connection = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
            except OSError as exc:
                if not logged_outage:
                    log.error("%s: cannot reach gpsd at %s:%d: %s; retrying with back-off",
                              self.name, self.host, self.port, exc)
                    logged_outage = True
                self.health.reconnects += 1
                staleness.check()
                backoff.wait(on_idle, stop)
                continue
            log.info("%s: connected to gpsd at %s:%d", self.name, self.host, self.port)
            logged_outage = False
            state["connected"] = 1
            try:
                connection.settimeout(READ_TIMEOUT)
                connection.sendall(WATCH)
                self._receive(connection, staleness, on_frames, on_idle, stop, backoff)
            except OSError as exc:
                log.error("%s: gpsd connection failed: %s; reconnecting", self.name, exc)
            finally:
                connection.close()
                state.update(connected=0, fix_mode=0)
            if not stop.is_set():
                self.health.reconnects += 1
                self._withdraw_position(on_frames)
                backoff.wait(on_idle, stop)

    def _receive(self, connection: socket.socket, staleness: Staleness, on_frames: OnFrames,
                 on_idle: OnIdle, stop: threading.Event, backoff: Backoff) -> None:
        buffer = bytearray()
        while not stop.is_set():
            try:
                data = connection.recv(65536)
            except TimeoutError:
                staleness.check()
                on_idle(time.time())
                continue
            if not data:
                log.warning("%s: gpsd closed the connection", self.name)
                return
            buffer += data
            *lines, rest = buffer.split(b"\n")
            buffer = bytearray(rest)
            if len(buffer) > MAX_REPORT:
                self.health.reject("too_long")
                buffer.clear()
            now = time.time()
            for line in lines:
                if line.strip():
                    self._handle(line, now, staleness, on_frames, backoff)
            staleness.check()

    def _handle(self, line: bytes, now: float, staleness: Staleness, on_frames: OnFrames,
                backoff: Backoff) -> None:
        parsed = parse_report(line)
        if parsed is None:
            return
        if isinstance(parsed, Rejected):
            if parsed.reason not in self.health.rejected:
                log.warning("%s: dropped a gpsd report (%s): %.200r (further ones are counted, "
                            "not logged)", self.name, parsed.reason, line)
            self.health.reject(parsed.reason)
            return
        backoff.reset()  # gpsd is talking sense: a later outage starts with short waits
        if parsed.fix_mode is not None and parsed.fix_mode >= 2:
            staleness.fresh()
        if parsed.fix_mode is not None:
            self.health.state["fix_mode"] = parsed.fix_mode
        if parsed.gps_time is not None:
            clock.GPS_TIME.observe(parsed.gps_time, now)
        for quantity, value in parsed.values:
            on_frames((Reading(now, quantity, value),))

    def _withdraw_position(self, on_frames: OnFrames) -> None:
        now = time.time()
        for quantity in POSITION:
            on_frames((Reading(now, quantity, None),))


GPSD_PORT = 2947


@dataclass(frozen=True)
class GpsdConfig(SourceConfig):
    """gpsd's JSON socket (docs/sensors.md)."""

    host: str = "127.0.0.1"
    port: int = GPSD_PORT


def _check(config: GpsdConfig, error: ErrorAt) -> None:
    check_device_source(config, error)
    if not 0 < config.port < 65536:
        raise error("port", "gpsd's TCP port, an integer (default 2947)")


def _open(config: GpsdConfig, can_filters: Sequence[dict[str, Any]],
          health: SourceHealth) -> GpsdSource:
    return GpsdSource(config.name, health, config.host, config.port, config.stale_after)


def _where(config: GpsdConfig) -> str:
    return f"{config.host}:{config.port}"


def _warnings(source: Mapping[str, Any]) -> list[str]:
    found = link_warnings(source)
    if source.get("connected") and not source.get("stale") and source.get("fix_mode", 0) < 2:
        found.append(f"{device_name(source)}: no fix "
                     f"({FIX_NAMES.get(source.get('fix_mode', 0))}): sky view, antenna, or a "
                     "cold start under way")
    return found + rejected_warnings(source)


SOURCE_TYPE = SourceType(name="gpsd", config=GpsdConfig, check=_check, open=_open,
                         where=_where, warnings=_warnings,
                         catalogue=lambda config: GPS_CATALOGUE)
