"""A python-can bus as a source: any interface python-can knows, chosen by name in config."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import can
from cantools.database.can import Database

from agent.config import SourceConfig
from agent.health import SourceHealth
from agent.sources.base import OnFrames, OnIdle, Source

log = logging.getLogger(__name__)

RECV_TIMEOUT = 0.25
BATCH_FRAMES = 64  # ~16 ms of a full 500 kbit/s bus at most: sampling ticks stay on time
REOPEN_MIN = 0.5
REOPEN_MAX = 30.0
# A SocketCAN socket's receive queue, in bytes (a frame takes ~1 kB of it): the kernel default
# (~200 kB, ~200 frames) overflows when a busy Python process stalls a fraction of a second.
RECEIVE_BUFFER = 8 * 2**20
SO_RCVBUFFORCE = 33  # Linux, <asm-generic/socket.h>; Python's socket module lacks the name
# Interfaces that cannot filter in a kernel or adapter: python-can would test every frame
# against every filter in Python (~7 µs a frame for 85 IDs, more than all our own work on
# it), where the FrameStore drops an unplanned ID with one dict lookup. They get no filters.
FILTERED_IN_PYTHON = frozenset({"virtual", "slcan", "serial", "udp_multicast", "robotell",
                                "seeedstudio", "socketcand"})


def unreachable_fd_messages(config: SourceConfig, database: Database,
                            frame_ids: Iterable[int]) -> list[str]:
    """Planned CAN FD messages a classic bus never receives: a SocketCAN socket (and most
    adapters) opened without `fd = true` drops FD frames before they reach us, silently."""
    if config.fd or config.type in ("virtual", "replay"):
        return []
    messages = (database.get_message_by_frame_id(frame_id) for frame_id in sorted(frame_ids))
    return [message.name for message in messages if message.is_fd]


class CanBusSource(Source):
    """Reads one bus with kernel (or hardware) filters for the planned IDs.

    When the bus fails (interface down, adapter unplugged) it is closed and reopened with
    exponential back-off and jitter; each reopening is counted in `health.reconnects`.
    """

    def __init__(self, name: str, health: SourceHealth, bus_options: dict[str, Any],
                 can_filters: Sequence[dict[str, Any]]) -> None:
        super().__init__(name, health)
        self._bus_options = bus_options
        self._filters = list(can_filters)

    def open_bus(self) -> can.BusABC:
        software = self._bus_options.get("interface") in FILTERED_IN_PYTHON
        bus = can.Bus(can_filters=None if software else self._filters, **self._bus_options)
        _enlarge_receive_buffer(bus)
        return bus

    def idle_time(self) -> float:
        return time.time()

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
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
                self._receive(bus, on_frames, on_idle, stop)
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

    def _receive(self, bus: can.BusABC, on_frames: OnFrames, on_idle: OnIdle,
                 stop: threading.Event) -> None:
        recv = bus.recv
        # What is already queued is taken through the method every python-can interface
        # implements behind `recv`, without `recv`'s per-call timing and logging: ~0.5 µs a
        # frame, a third of our own work on it. python-can's software filters still apply.
        queued, matches = bus._recv_internal, bus._matches_filters
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
            elif self.end_of_data():
                self.finished.set()
                return
            else:
                on_idle(self.idle_time())

    def end_of_data(self) -> bool:
        return False

    def _describe(self) -> str:
        options = self._bus_options
        return f"{options.get('interface')}:{options.get('channel')}"


def _enlarge_receive_buffer(bus: can.BusABC) -> None:
    sock = getattr(bus, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family != getattr(socket, "AF_CAN", -1):
        return
    try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN; without it the kernel caps the size
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    log.debug("receive buffer: %d bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
