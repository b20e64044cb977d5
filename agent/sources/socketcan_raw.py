"""SocketCAN read straight from the AF_CAN socket: frames in batches, no `can.Message` each.

python-can's SocketCAN receive path (a select, a recvmsg and one `can.Message` with its
checks per frame) is ~80 % of what the agent spends on a busy bus (issue #26). This reader
keeps what the kernel does for us (filters for the planned IDs, nanosecond timestamps, a
count of the frames it dropped) and drops the rest: after one poll() wake-up it drains the
socket with recvmmsg (agent/sources/recvmmsg.py: many frames a system call; recvmsg a frame
where the C library lacks it) and hands the batch on as `RawFrame`s, which carry
the attributes the decoder reads from a `can.Message`, with the same values and timestamps
python-can would give (tests/unit/sources/test_socketcan_raw.py, tests/vcan).

Wake-up batching: after a batch smaller than the limit the reader naps (at most GATHER_MAX,
and never longer than a quarter of the time a full 1 Mbit/s bus takes to fill the socket's
receive queue), so a slow or quiet bus costs a wake-up per nap rather than one per frame,
and a full queue cannot overflow during a nap.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from agent.sources.base import OnFrames, OnIdle
from agent.sources.canbus import (
    RECV_TIMEOUT,
    CanBusSource,
    set_receive_buffer,
    socket_drops,
)
from agent.sources.health import SourceHealth
from agent.sources.recvmmsg import BatchReceiver, Received, ancillary_items
from agent.sources.recvmmsg import available as recvmmsg_available

log = logging.getLogger(__name__)

# <linux/can.h>, <linux/can/raw.h>, <asm-generic/socket.h>: Python's socket module lacks some.
AF_CAN = 29
CAN_RAW = 1
SOL_CAN_RAW = 101
CAN_RAW_FILTER = 1
CAN_RAW_ERR_FILTER = 2
CAN_RAW_FD_FRAMES = 5
CAN_RAW_FILTER_MAX = 512  # the kernel refuses a longer filter list (EINVAL)
SO_TIMESTAMPNS = 35
SO_RXQ_OVFL = 40
CAN_EFF_FLAG = 0x80000000
CAN_RTR_FLAG = 0x40000000
CAN_ERR_FLAG = 0x20000000
CAN_SFF_MASK = 0x7FF
CAN_EFF_MASK = 0x1FFFFFFF
CAN_ERR_MASK = 0x1FFFFFFF
CANFD_BRS = 0x01
CANFD_ESI = 0x02
CAN_MTU = 16
CANFD_MTU = 72
CAN_MAX_DLEN = 8
CAN_MAX_RAW_DLC = 15

# struct can_frame / canfd_frame: can_id, len, flags (FD) or pad, res0, len8_dlc; then data.
HEADER = struct.Struct("=IBBBB")
TIMESPEC = struct.Struct("@ll")
DROPS = struct.Struct("=I")
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size) + socket.CMSG_SPACE(DROPS.size)
# A control buffer holding the timestamp alone (STAMPED_SPACE bytes used).
STAMPED_SPACE = socket.CMSG_SPACE(TIMESPEC.size)
# recvmmsg's slots as numpy records: a struct can_frame / canfd_frame (the header fields),
# and a control buffer starting with a cmsghdr and, if it is the timestamp, its timespec.
FRAME_SLOT = np.dtype({"names": ["can_id", "len", "len8_dlc"],
                       "formats": ["=u4", "u1", "u1"], "offsets": [0, 4, 7],
                       "itemsize": CANFD_MTU})
STAMPED_SLOT = np.dtype({"names": ["level", "type", "seconds", "nanoseconds"],
                         "formats": [np.intc, np.intc, np.int_, np.int_],
                         "offsets": [struct.calcsize("@N"), struct.calcsize("@Ni"),
                                     socket.CMSG_LEN(0), socket.CMSG_LEN(0) + np.dtype(
                                         np.int_).itemsize],
                         "itemsize": ANCILLARY_SIZE})
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
# A length field as python-can reads it: rounded up to the next valid CAN FD length.
DATA_LENGTH = tuple(min(n for n in FD_LENGTHS if n >= length) for length in range(65))

BATCH_MAX = 256  # frames per handover: ~1.5 ms of the pipeline lock at most
# s: a nap between small batches; ~205 frames of a full 500 kbit/s bus. A wake-up (poll, the
# GIL, a context switch) cost ~90 µs on the bench VM: at 10 ms naps that was a third of the
# reader's CPU on four full buses (docs/performance.md). 50 ms of delay is far inside the
# 2 s event-time lateness the sampler allows across buses.
GATHER_MAX = 0.05
FRAME_TRUESIZE = 1024  # bytes of receive queue one queued frame takes (kernel accounting)
FASTEST_BUS = 8_300  # frames/s of a full 1 Mbit/s classic bus: the fastest fill of a queue


@dataclass(slots=True)
class RawFrame:
    """One frame as the decoder reads it; the same attribute values as python-can's Message."""

    timestamp: float
    arbitration_id: int
    is_extended_id: bool
    is_remote_frame: bool
    is_error_frame: bool
    is_fd: bool
    bitrate_switch: bool
    error_state_indicator: bool
    dlc: int
    data: bytes


class MalformedFrame(ValueError):
    """A frame whose length field no CAN frame can have (counted, never raised further)."""


def parse_frame(frame: bytes, timestamp: float) -> RawFrame:
    """A `RawFrame` from the bytes of a struct can_frame (16) or canfd_frame (72), as python-can's
    `capture_message` reads them."""
    can_id, length, flags, _, len8_dlc = HEADER.unpack_from(frame)
    if length > 64:
        raise MalformedFrame(f"length field {length}")
    length = DATA_LENGTH[length]
    is_fd = len(frame) == CANFD_MTU
    dlc = length
    if not is_fd:
        flags = 0  # not valid in a classic frame
        if length == CAN_MAX_DLEN and CAN_MAX_DLEN < len8_dlc <= CAN_MAX_RAW_DLC:
            dlc = len8_dlc
    extended, remote = bool(can_id & CAN_EFF_FLAG), bool(can_id & CAN_RTR_FLAG)
    return RawFrame(timestamp, can_id & (CAN_EFF_MASK if extended else CAN_SFF_MASK), extended,
                    remote, bool(can_id & CAN_ERR_FLAG), is_fd, bool(flags & CANFD_BRS),
                    bool(flags & CANFD_ESI), dlc,
                    b"" if remote else frame[8:8 + length])  # as can.Message keeps it


def kernel_time(timespec: bytes) -> float:
    """Seconds of a struct timespec, in the same float arithmetic as python-can."""
    seconds, nanoseconds = TIMESPEC.unpack_from(timespec)
    return seconds + nanoseconds * 1e-9


def pack_filters(can_filters: Sequence[Mapping[str, Any]]) -> bytes:
    """CAN_RAW_FILTER's array of struct can_filter, as python-can packs `can_filters`: an
    `extended` key matches only that ID kind; remote frames pass (the decoder counts them)."""
    words = []
    for can_filter in can_filters:
        can_id, mask = can_filter["can_id"], can_filter["can_mask"]
        if "extended" in can_filter:
            mask |= CAN_EFF_FLAG
            if can_filter["extended"]:
                can_id |= CAN_EFF_FLAG
        words += (can_id, mask)
    return struct.pack(f"={len(words)}I", *words)


def frame_key(can_id: int) -> int:
    """What a struct can_frame's can_id is matched on in user space: the ID and its kind."""
    if can_id & CAN_EFF_FLAG:
        return can_id & (CAN_EFF_FLAG | CAN_EFF_MASK)
    return can_id & CAN_SFF_MASK


def user_space_keys(can_filters: Sequence[Mapping[str, Any]]) -> frozenset[int] | None:
    """The `frame_key`s that exact-ID filters let through, for a list too long for the kernel;
    None (keep every frame: the decoder ignores unplanned ones) if a filter masks bits."""
    keys = set()
    for can_filter in can_filters:
        extended = bool(can_filter.get("extended"))
        full = CAN_EFF_MASK if extended else CAN_SFF_MASK
        if can_filter["can_mask"] & full != full or "extended" not in can_filter:
            return None
        keys.add(can_filter["can_id"] & full | (CAN_EFF_FLAG if extended else 0))
    return frozenset(keys)


def gather_time(receive_buffer: int) -> float:
    """The nap between small batches: a quarter of the time the fastest bus takes to fill a
    receive queue of `receive_buffer` bytes (as the kernel reports it), at most GATHER_MAX."""
    return min(GATHER_MAX, receive_buffer / FRAME_TRUESIZE / FASTEST_BUS / 4)


class RawCanSocket:
    """An open, bound, non-blocking CAN_RAW socket and what its reader needs to know of it."""

    def __init__(self, sock: socket.socket, keys: frozenset[int] | None,
                 batch: int = BATCH_MAX) -> None:
        self.socket = sock
        self.keys = keys  # planned frame keys when the kernel could not filter, else None
        self.drops = 0  # the kernel's drop count for this socket, as the last frame carried it
        # recvmmsg buffers (one system call for up to `batch` frames); None: recvmsg a frame.
        self.batches = (BatchReceiver(sock, CANFD_MTU, ANCILLARY_SIZE, batch)
                        if batch > 1 and recvmmsg_available() else None)
        self.gather = gather_time(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def shutdown(self) -> None:
        self.socket.close()


def open_socket(channel: str, can_filters: Sequence[Mapping[str, Any]], *, fd: bool,
                receive_buffer: int) -> RawCanSocket:
    """A CAN_RAW socket on `channel` with the filters, error frames, nanosecond timestamps and
    drop counts set before it is bound (so no unfiltered frame is queued)."""
    sock = socket.socket(AF_CAN, socket.SOCK_RAW, CAN_RAW)
    try:
        if fd:
            sock.setsockopt(SOL_CAN_RAW, CAN_RAW_FD_FRAMES, 1)
        sock.setsockopt(SOL_CAN_RAW, CAN_RAW_ERR_FILTER, CAN_ERR_MASK)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        keys = None
        if len(can_filters) <= CAN_RAW_FILTER_MAX:
            sock.setsockopt(SOL_CAN_RAW, CAN_RAW_FILTER, pack_filters(can_filters))
        else:
            keys = user_space_keys(can_filters)
            log.info("%s: %d IDs are more than the kernel filters (%d): filtered here",
                     channel, len(can_filters), CAN_RAW_FILTER_MAX)
        set_receive_buffer(sock, receive_buffer)
        sock.bind((channel,))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return RawCanSocket(sock, keys)


def drain(raw: RawCanSocket, health: SourceHealth, limit: int = BATCH_MAX) -> list[RawFrame]:
    """Up to `limit` frames already queued on the socket, oldest first. Updates `raw.drops`
    from the kernel's drop count when a frame carries it; malformed frames are counted."""
    frames: list[RawFrame] = []
    try:
        if raw.batches is not None:
            while len(frames) < limit:
                wanted = limit - len(frames)
                received = raw.batches.receive(wanted)
                if not received.count:
                    break
                _take_batch(raw, received, health, frames)
                if received.count < min(wanted, raw.batches.limit):
                    break  # the queue is empty: spare a system call that finds nothing
        else:
            recvmsg = raw.socket.recvmsg
            while len(frames) < limit:
                frame, ancillary, _, _ = recvmsg(CANFD_MTU, ANCILLARY_SIZE)
                _take_frame(raw, frame, ancillary, health, frames)
    except BlockingIOError:
        pass
    return frames


def _take_batch(raw: RawCanSocket, received: Received, health: SourceHealth,
                frames: list[RawFrame]) -> None:
    """The frames of one recvmmsg call appended to `frames`.

    Parsed a column at a time with numpy: the usual frame (classic, a timestamp alone, not
    remote, a plain length) becomes a RawFrame built in C by `map`; the others go through
    `_take_frame` one by one, in their place. Same values as `parse_frame` (tests)."""
    count = received.count
    header = np.frombuffer(received.data, FRAME_SLOT, count)
    control = np.frombuffer(received.control, STAMPED_SLOT, count)
    can_id, dlc = header["can_id"], header["len"]
    plain = ((received.lengths == CAN_MTU) & (received.control_lengths == STAMPED_SPACE)
             & (control["level"] == socket.SOL_SOCKET) & (control["type"] == SO_TIMESTAMPNS)
             & (can_id & CAN_RTR_FLAG == 0)
             & ((dlc < CAN_MAX_DLEN) | ((dlc == CAN_MAX_DLEN) & (header["len8_dlc"]
                                                               <= CAN_MAX_DLEN))))
    if raw.keys is not None:
        plain[:] = False  # filtered here, frame by frame
    extended = can_id & CAN_EFF_FLAG != 0
    # Python's own float arithmetic, element by element: seconds + nanoseconds * 1e-9.
    timestamps = control["seconds"] + control["nanoseconds"] * 1e-9
    identifiers = np.where(extended, can_id & CAN_EFF_MASK, can_id & CAN_SFF_MASK)
    lengths = dlc.tolist()
    data = received.data
    payloads = [data[start:start + length] for start, length in
                zip(range(8, count * CANFD_MTU, CANFD_MTU), lengths, strict=False)]
    built = map(RawFrame, timestamps.tolist(), identifiers.tolist(), extended.tolist(),
                repeat(False), (can_id & CAN_ERR_FLAG != 0).tolist(), repeat(False),
                repeat(False), repeat(False), lengths, payloads)
    if plain.all():
        frames.extend(built)
        return
    for n, (usual, frame) in enumerate(zip(plain.tolist(), built, strict=False)):
        if usual:
            frames.append(frame)
            continue
        start, begin = n * CANFD_MTU, n * ANCILLARY_SIZE
        _take_frame(raw, data[start:start + int(received.lengths[n])],
                    ancillary_items(received.control[
                        begin:begin + int(received.control_lengths[n])]), health, frames)


def _take_frame(raw: RawCanSocket, frame: bytes, ancillary: list[tuple[int, int, bytes]],
                health: SourceHealth, frames: list[RawFrame]) -> None:
    """One received datagram, as recvmsg gives it, appended to `frames` if it is kept."""
    if len(ancillary) == 1 and len(frame) == CAN_MTU and raw.keys is None:
        # Most frames: classic, with a timestamp alone (no drops reported). This is
        # parse_frame() and kernel_time() inlined: two calls a frame are ~10 % of it.
        can_id, length, _, _, len8_dlc = HEADER.unpack_from(frame)
        if not can_id & CAN_RTR_FLAG and (length < CAN_MAX_DLEN or (
                length == CAN_MAX_DLEN and len8_dlc <= CAN_MAX_DLEN)):
            seconds, nanoseconds = TIMESPEC.unpack_from(ancillary[0][2])
            extended = bool(can_id & CAN_EFF_FLAG)
            frames.append(RawFrame(seconds + nanoseconds * 1e-9,
                                   can_id & (CAN_EFF_MASK if extended else CAN_SFF_MASK),
                                   extended, False, bool(can_id & CAN_ERR_FLAG), False, False,
                                   False, length, frame[8:8 + length]))
            return
    timestamp = None
    for level, kind, data in ancillary:
        if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
            timestamp = kernel_time(data)
        elif kind == SO_RXQ_OVFL and level == socket.SOL_SOCKET:
            # The socket's drop count when this frame was queued (sent only once it is
            # not 0): the same count SO_MEMINFO reports.
            raw.drops = DROPS.unpack_from(data)[0]
    try:
        if raw.keys is not None:
            can_id = HEADER.unpack_from(frame)[0]
            if frame_key(can_id) not in raw.keys and not can_id & CAN_ERR_FLAG:
                return
        frames.append(parse_frame(frame, time.time() if timestamp is None else timestamp))
    except (MalformedFrame, struct.error):
        health.reject("malformed_frame")


class RawSocketCanSource(CanBusSource):
    """A SocketCAN bus read by `drain` (CanBusSource's reopening with back-off, and counters).

    `open_bus` and `receive` keep CanBusSource's shape, so the daemon, the benchmark and the
    tests drive either reader the same way."""

    def __init__(self, name: str, health: SourceHealth, channel: str,
                 can_filters: Sequence[Mapping[str, Any]], *, fd: bool,
                 receive_buffer: int) -> None:
        super().__init__(name, health, {"interface": "socketcan", "channel": channel},
                         [dict(f) for f in can_filters], receive_buffer=receive_buffer)
        self._channel = channel
        self._fd = fd

    def open_bus(self, **overrides: Any) -> RawCanSocket:  # type: ignore[override]
        return open_socket(self._channel, self._filters, fd=self._fd,
                           receive_buffer=self._receive_buffer)

    def receive(self, bus: RawCanSocket, on_frames: OnFrames, on_idle: OnIdle,  # type: ignore[override]
                stop: threading.Event) -> None:
        sock, health = bus.socket, self.health
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        wait, nap, sleep = poll.poll, bus.gather, time.sleep
        timeout_ms = int(RECV_TIMEOUT * 1000)
        counted = health.overflow  # earlier sockets' drops stay counted

        def count_overflow() -> None:
            health.overflow = counted + max(bus.drops, socket_drops(sock))

        try:
            while not stop.is_set():
                if not wait(timeout_ms):
                    count_overflow()
                    on_idle(self.idle_time())
                    continue
                # An interface gone down or away makes poll() report an error, which
                # drain()'s first recvmsg raises (ENETDOWN, ENODEV): run() reopens the bus.
                frames = drain(bus, health)
                if frames:
                    on_frames(frames)
                    if bus.drops:
                        health.overflow = counted + bus.drops
                if len(frames) < BATCH_MAX:
                    sleep(nap)
        finally:
            with contextlib.suppress(OSError):
                count_overflow()
