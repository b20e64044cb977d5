"""A python-can bus as a source: any interface python-can knows, chosen by name in config.

python-can itself is imported when a bus is opened, not with this module: loading and
checking a config (which looks its source types up) needs only the config class and checks
here, and python-can takes ~0.15 s to import (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config.source import SourceConfig
from agent.errors import ConfigError
from agent.sources.base import OnFrames, OnIdle, Source, failure_warning
from agent.sources.health import SourceHealth
from agent.sources.registry import PYTHON_CAN, ErrorAt, SourceType

if TYPE_CHECKING:
    import can
    from cantools.database.can import Database

    from agent.decoding.tables import DbcTables

log = logging.getLogger(__name__)

RECV_TIMEOUT = 0.25
BATCH_FRAMES = 64  # ~16 ms of a full 500 kbit/s bus at most: sampling ticks stay on time
REOPEN_MIN = 0.5
REOPEN_MAX = 30.0
# A SocketCAN socket's receive queue, in bytes (a frame takes ~1 kB of it): the kernel default
# (~200 kB, ~200 frames) overflows when a busy Python process stalls a fraction of a second.
RECEIVE_BUFFER = 8 * 2**20
# Linux, <asm-generic/socket.h>; Python's socket module lacks the names.
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55  # since 4.12: struct of SK_MEMINFO_VARS u32; DROPS counts frames not queued
_MEMINFO = struct.Struct("=9I")
SK_MEMINFO_DROPS = 8
OVERFLOW_EVERY = 1.0  # s between reads of the kernel's drop count on a busy bus
# Interfaces that cannot filter in a kernel or adapter: python-can would test every frame
# against every filter in Python (~7 µs a frame for 85 IDs, more than all our own work on
# it), where the FrameStore drops an unplanned ID with one dict lookup. They get no filters.
FILTERED_IN_PYTHON = frozenset({"virtual", "slcan", "serial", "udp_multicast", "robotell",
                                "seeedstudio", "socketcand"})


# How a `socketcan` bus is read; other interfaces always go through python-can.
READERS = ("raw", "python-can")
SILENT_BUS_AFTER = 10.0  # s without a frame before a live bus is reported silent


@dataclass(frozen=True)
class CanBusConfig(SourceConfig):
    """A bus through any python-can interface: `type` is the interface (`socketcan`, ...)."""

    channel: str = ""
    bitrate: int = 500_000
    fd: bool = False
    data_bitrate: int = 2_000_000
    # SocketCAN: the socket's receive queue, which rides out a stall of the agent (~1 kB a
    # frame: 8 MB holds ~2 s of a full 500 kbit/s bus); what overflows is counted, not read.
    receive_buffer_kb: int = 8192
    # SocketCAN: "raw" reads the AF_CAN socket in batches (agent/sources/socketcan_raw.py,
    # ~3x less CPU a frame); "python-can" reads it through python-can, for comparison.
    reader: str = "raw"


def check_dbc(config: SourceConfig, error: ErrorAt) -> None:
    if not config.dbc:
        raise error("dbc", "list the DBC file(s) that describe this bus")


def _check(config: CanBusConfig, error: ErrorAt) -> None:
    check_dbc(config, error)
    if not config.channel:
        raise error("channel", f"a {config.type} bus needs a channel")
    if config.receive_buffer_kb <= 0:
        raise error("receive_buffer_kb", "must be a positive number of kB")
    if config.reader not in READERS:
        raise error("reader", f"use one of {', '.join(READERS)}")


def _open(config: CanBusConfig, can_filters: Sequence[dict[str, Any]],
          health: SourceHealth) -> CanBusSource:
    import can

    if config.type not in can.interfaces.VALID_INTERFACES:
        raise ConfigError(f"source {config.name!r}: unknown type {config.type!r}; use "
                          f"'replay', 'gpsd', 'serial' or a python-can interface: "
                          f"{', '.join(sorted(can.interfaces.VALID_INTERFACES))}")
    if config.type == "socketcan" and config.reader == "raw":
        # Imported here: that module builds on this one.
        from agent.sources.socketcan_raw import RawSocketCanSource

        return RawSocketCanSource(config.name, health, config.channel, can_filters,
                                  fd=config.fd, receive_buffer=config.receive_buffer_kb * 1024)
    options: dict[str, Any] = {"interface": config.type, "channel": config.channel,
                               "bitrate": config.bitrate}
    if config.fd:
        options.update(fd=True, data_bitrate=config.data_bitrate)
    return CanBusSource(config.name, health, options, can_filters,
                        receive_buffer=config.receive_buffer_kb * 1024)


def bus_warnings(source: Mapping[str, Any], *, live: bool = True) -> list[str]:
    """Problems of a bus's status document in a field technician's words; a bus that is not
    `live` (a recording) is not expected to hear frames all the time."""
    name = source["name"]
    found = failure_warning(source, f"bus {name}")
    if source["finished"]:
        return found
    age = source["last_frame_age_s"]
    if age is None:
        found.append(f"bus {name} ({source['channel']}): no frame received yet")
    elif age > SILENT_BUS_AFTER and live:
        found.append(f"bus {name}: silent for {age:.0f} s (ignition off, wiring, or "
                     "interface down?)")
    if source["error_frames"]:
        found.append(f"bus {name}: {source['error_frames']} error frames (termination, "
                     "bitrate or a faulty node)")
    if source["short_frames"] or source["decode_errors"]:
        found.append(f"bus {name}: {source['short_frames']} short frames and "
                     f"{source['decode_errors']} undecodable frames (DBC does not match the "
                     "vehicle?)")
    if source["overflow"]:
        found.append(f"bus {name}: {source['overflow']} frames lost in the kernel (the agent "
                     "did not read fast enough: CPU starved, or raise receive_buffer_kb)")
    if source["reconnects"]:
        found.append(f"bus {name}: reopened {source['reconnects']} times")
    return found


def unreachable_fd_messages(config: SourceConfig, database: DbcTables | Database,
                            frame_ids: Iterable[int]) -> list[str]:
    """Planned CAN FD messages a classic bus never receives: a SocketCAN socket (and most
    adapters) opened without `fd = true` drops FD frames before they reach us, silently."""
    if not isinstance(config, CanBusConfig) or config.fd or config.type == "virtual":
        return []
    by_id = {message.frame_id: message for message in database.messages}
    return [by_id[frame_id].name for frame_id in sorted(frame_ids) if by_id[frame_id].is_fd]


class CanBusSource(Source):
    """Reads one bus with kernel (or hardware) filters for the planned IDs.

    When the bus fails (interface down, adapter unplugged) it is closed and reopened with
    exponential back-off and jitter; each reopening is counted in `health.reconnects`.
    Frames the kernel drops because the socket's receive queue is full (the agent did not
    read fast enough) are counted in `health.overflow` (SocketCAN).
    """

    def __init__(self, name: str, health: SourceHealth, bus_options: dict[str, Any],
                 can_filters: Sequence[dict[str, Any]], *,
                 receive_buffer: int = RECEIVE_BUFFER) -> None:
        super().__init__(name, health)
        self._bus_options = bus_options
        self._filters = list(can_filters)
        self._receive_buffer = receive_buffer

    def open_bus(self, **overrides: Any) -> can.BusABC:
        """The bus, filtered; `overrides` change python-can options for this opening only
        (the benchmark gives its virtual buses a bounded queue)."""
        import can

        options = {**self._bus_options, **overrides}
        software = options.get("interface") in FILTERED_IN_PYTHON
        bus = can.Bus(can_filters=None if software else self._filters, **options)
        sock = _can_socket(bus)
        if sock is not None:
            set_receive_buffer(sock, self._receive_buffer)
        return bus

    def idle_time(self) -> float:
        return time.time()

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        import can

        delay = REOPEN_MIN
        while not stop.is_set():
            try:
                bus = self.open_bus()
            except (can.CanError, OSError) as exc:
                log.error("%s: cannot open bus %s: %s; retrying in %.1f s",
                          self.name, self._describe(), exc, delay)
                self.health.reconnects += 1
                self._wait_quietly(delay * random.uniform(0.8, 1.2), on_idle, stop)
                delay = min(delay * 2, REOPEN_MAX)
                continue
            frames_before = self.health.frames
            try:
                self.receive(bus, on_frames, on_idle, stop)
                failure = None
            except (can.CanError, OSError) as exc:
                failure = exc
            finally:
                bus.shutdown()
            if failure is None:
                return
            # A SocketCAN bus opens fine on an interface that is down and fails at its first
            # read: only a bus that delivered frames earns a quick reopening.
            if self.health.frames != frames_before:
                delay = REOPEN_MIN
            log.error("%s: bus %s failed: %s; reopening in %.1f s",
                      self.name, self._describe(), failure, delay)
            self.health.reconnects += 1
            self._wait_quietly(delay * random.uniform(0.8, 1.2), on_idle, stop)
            delay = min(delay * 2, REOPEN_MAX)

    def _wait_quietly(self, seconds: float, on_idle: OnIdle, stop: threading.Event) -> None:
        """Wait while the bus is away, still moving time on (windows keep sealing)."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            on_idle(self.idle_time())
            stop.wait(min(RECV_TIMEOUT * 4, max(0.0, deadline - time.monotonic())))

    def receive(self, bus: can.BusABC, on_frames: OnFrames, on_idle: OnIdle,
                 stop: threading.Event) -> None:
        """Read the open `bus` until `stop` (or it fails). Public so that the ingest benchmark
        and the tests drive it on a bus they opened."""
        recv = bus.recv
        # What is already queued is taken through the method every python-can interface
        # implements behind `recv`, without `recv`'s per-call timing and logging: ~0.5 µs a
        # frame, a third of our own work on it. python-can's software filters still apply.
        queued, matches = bus._recv_internal, bus._matches_filters
        overflow = _overflow_counter(bus, self.health)
        next_count = 0.0
        try:
            while not stop.is_set():
                frame = recv(RECV_TIMEOUT)
                if frame is not None:
                    # Whatever else is already queued goes along: with several busy buses, one
                    # handover per frame to the shared pipeline lock costs more than the frame.
                    frames = [frame]
                    while len(frames) < BATCH_FRAMES:
                        frame, filtered = queued(0)
                        if frame is None:
                            break
                        if filtered or matches(frame):
                            frames.append(frame)
                    on_frames(frames)
                    if overflow is not None and (now := time.monotonic()) >= next_count:
                        overflow()
                        next_count = now + OVERFLOW_EVERY
                elif self.end_of_data():
                    self.finished.set()
                    return
                else:
                    if overflow is not None:
                        overflow()
                    on_idle(self.idle_time())
        finally:
            if overflow is not None:
                with contextlib.suppress(OSError):
                    overflow()

    def end_of_data(self) -> bool:
        return False

    def _describe(self) -> str:
        options = self._bus_options
        return f"{options.get('interface')}:{options.get('channel')}"


def _can_socket(bus: can.BusABC) -> socket.socket | None:
    """The SocketCAN socket under a python-can bus, or None for any other interface."""
    sock = getattr(bus, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family != getattr(socket, "AF_CAN", -1):
        return None
    return sock


def set_receive_buffer(sock: socket.socket, size: int) -> None:
    try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN; without it the kernel caps the size
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    log.debug("receive buffer: %d bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def socket_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped for this socket because its receive queue was full."""
    meminfo = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    return _MEMINFO.unpack(meminfo)[SK_MEMINFO_DROPS]


def _overflow_counter(bus: can.BusABC, health: SourceHealth) -> Callable[[], None] | None:
    """A function that brings `health.overflow` up to date with this bus's socket, which
    counts from 0 (earlier sockets' drops stay counted); None where there is no such count."""
    sock = _can_socket(bus)
    if sock is None:
        return None
    try:
        socket_drops(sock)
    except OSError:  # a kernel before 4.12
        log.warning("this kernel does not report SocketCAN receive overflows (SO_MEMINFO)")
        return None
    counted = health.overflow

    def update() -> None:
        health.overflow = counted + socket_drops(sock)

    return update


SOURCE_TYPE = SourceType(name=PYTHON_CAN, config=CanBusConfig, check=_check, open=_open,
                         where=lambda config: config.channel, warnings=bus_warnings)
