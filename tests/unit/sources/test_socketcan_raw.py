"""The raw SocketCAN reader's pure parts against python-can's, and its batching on a real socket.

This kernel has no AF_CAN: the frames travel over an AF_UNIX SOCK_SEQPACKET pair, which hands
out datagrams with the same SO_TIMESTAMPNS ancillary data, so python-can's own
`capture_message` and our `drain` read the same bytes. The AF_CAN socket itself is tested in
the vcan tier (tests/vcan/test_raw_reader.py).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from can.interfaces.socketcan.socketcan import capture_message
from can.interfaces.socketcan.utils import pack_filters as python_can_pack_filters
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sources.health import SourceHealth
from agent.sources.recvmmsg import Received, ancillary_items
from agent.sources.socketcan_raw import (
    ANCILLARY_SIZE,
    BATCH_MAX,
    CAN_EFF_FLAG,
    CAN_ERR_FLAG,
    CAN_RTR_FLAG,
    CANFD_MTU,
    GATHER_MAX,
    SO_RXQ_OVFL,
    SO_TIMESTAMPNS,
    MalformedFrame,
    RawCanSocket,
    RawSocketCanSource,
    _take_batch,
    drain,
    frame_key,
    gather_time,
    kernel_time,
    pack_filters,
    parse_frame,
    user_space_keys,
)

FIELDS = ("arbitration_id", "is_extended_id", "is_remote_frame", "is_error_frame", "is_fd",
          "bitrate_switch", "error_state_indicator", "dlc")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2**20)
    receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    yield sender, receiver
    sender.close()
    receiver.close()


@pytest.fixture(params=["recvmmsg", "recvmsg"])
def read_path(request: pytest.FixtureRequest) -> str:
    """Every socket test runs on both read paths: recvmmsg batches and a recvmsg a frame."""
    return request.param


def raw_socket(receiver: socket.socket, keys: frozenset[int] | None = None,
               read_path: str = "recvmmsg") -> RawCanSocket:
    receiver.setblocking(False)
    raw = RawCanSocket(receiver, keys, batch=BATCH_MAX if read_path == "recvmmsg" else 1)
    assert (raw.batches is not None) == (read_path == "recvmmsg"), \
        "this C library has no recvmmsg"
    return raw


frames = st.builds(
    lambda fd, can_id, length, flags, res, len8, data: struct.pack(
        "=IBBBB", can_id, length, flags, res, len8) + data.ljust(64 if fd else 8, b"\0"),
    st.booleans(), st.integers(0, 2**32 - 1), st.integers(0, 64), st.integers(0, 255),
    st.integers(0, 255), st.integers(0, 255), st.binary(max_size=8))
fd_frames = st.builds(
    lambda can_id, length, flags, data: struct.pack("=IBBBB", can_id, length, flags, 0, 0)
    + data.ljust(64, b"\0"),
    st.integers(0, 2**32 - 1), st.integers(0, 64), st.integers(0, 3), st.binary(max_size=64))


@settings(deadline=None)
@given(frame=st.one_of(frames, fd_frames))
def test_frames_read_as_python_can_reads_them(frame: bytes) -> None:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with sender, receiver:
        receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sender.send(frame)
        sender.send(frame)
        expected = capture_message(receiver)
        (got,) = drain(raw_socket(receiver), SourceHealth())
    assert expected is not None
    assert {name: getattr(got, name) for name in FIELDS} == \
        {name: getattr(expected, name) for name in FIELDS}
    assert got.data == bytes(expected.data)
    assert isinstance(got.data, bytes)
    # Sent a moment later: a kernel timestamp, not the time it was read.
    assert expected.timestamp <= got.timestamp < expected.timestamp + 60


@settings(deadline=None)
@given(seconds=st.integers(0, 2**40), nanoseconds=st.integers(0, 999_999_999),
       frame=frames)
def test_timestamps_are_python_cans_arithmetic(seconds: int, nanoseconds: int,
                                               frame: bytes) -> None:
    timespec = struct.pack("@ll", seconds, nanoseconds)
    assert kernel_time(timespec) == seconds + nanoseconds * 1e-9
    assert parse_frame(frame, kernel_time(timespec)).timestamp == seconds + nanoseconds * 1e-9


def test_malformed_frames_are_counted_not_raised(pair: tuple[socket.socket, socket.socket],
                                                read_path: str) -> None:
    sender, receiver = pair
    good = struct.pack("=IBBBB8s", 0x123, 8, 0, 0, 0, b"12345678")
    sender.send(struct.pack("=IBBBB8s", 0x123, 200, 0, 0, 0, bytes(8)))  # no such length
    sender.send(b"\x01\x02")  # shorter than a header
    sender.send(good)
    health = SourceHealth()
    got = drain(raw_socket(receiver, read_path=read_path), health)
    assert [(f.arbitration_id, f.data) for f in got] == [(0x123, b"12345678")]
    assert health.rejected == {"malformed_frame": 2}


filter_lists = st.lists(st.fixed_dictionaries(
    {"can_id": st.integers(0, 0x1FFFFFFF), "can_mask": st.integers(0, 0x1FFFFFFF)},
    optional={"extended": st.booleans()}), max_size=20)


@settings(deadline=None)
@given(filters=filter_lists)
def test_filters_packed_as_python_can_packs_them(filters: list[dict[str, int]]) -> None:
    assert pack_filters(filters) == python_can_pack_filters(filters)


def kernel_matches(packed: bytes, can_id: int) -> bool:
    """The kernel's CAN_RAW_FILTER rule (net/can/af_can.c, without inverted filters)."""
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return any(can_id & mask == fid & mask for fid, mask in zip(words[::2], words[1::2],
                                                                 strict=True))


planned = st.lists(st.builds(
    lambda extended, ident: {"can_id": ident & (0x1FFFFFFF if extended else 0x7FF),
                             "can_mask": 0x1FFFFFFF if extended else 0x7FF,
                             "extended": extended},
    st.booleans(), st.integers(0, 0x1FFFFFFF)), min_size=1, max_size=30)


@settings(deadline=None)
@given(filters=planned, ident=st.integers(0, 0x1FFFFFFF), extended=st.booleans(),
       remote=st.booleans(), pick=st.integers(0, 29))
def test_user_space_filter_lets_through_what_the_kernel_would(
        filters: list[dict[str, int]], ident: int, extended: bool, remote: bool,
        pick: int) -> None:
    if pick < len(filters):  # often a planned ID, not only random ones
        ident, extended = filters[pick]["can_id"], bool(filters[pick]["extended"])
    can_id = (ident & (0x1FFFFFFF if extended else 0x7FF)) | (CAN_EFF_FLAG if extended else 0)
    can_id |= CAN_RTR_FLAG if remote else 0
    keys = user_space_keys(filters)
    assert keys is not None
    assert (frame_key(can_id) in keys) == kernel_matches(pack_filters(filters), can_id)


def test_masked_filters_are_not_filtered_in_user_space() -> None:
    assert user_space_keys([{"can_id": 0x100, "can_mask": 0x700, "extended": False}]) is None
    assert user_space_keys([{"can_id": 0x100, "can_mask": 0x7FF}]) is None


def test_user_space_filter_drops_unplanned_keeps_errors(
        pair: tuple[socket.socket, socket.socket], read_path: str) -> None:
    sender, receiver = pair
    keys = user_space_keys([{"can_id": 0x10, "can_mask": 0x7FF, "extended": False}])
    for can_id in (0x10, 0x11, 0x10 | CAN_EFF_FLAG, CAN_ERR_FLAG | 0x4, 0x10 | CAN_RTR_FLAG):
        sender.send(struct.pack("=IBBBB8s", can_id, 8, 0, 0, 0, bytes(8)))
    got = drain(raw_socket(receiver, keys, read_path), SourceHealth())
    assert [(f.arbitration_id, f.is_error_frame, f.is_remote_frame) for f in got] == \
        [(0x10, False, False), (0x4, True, False), (0x10, False, True)]


def test_gather_never_outlasts_a_quarter_of_the_queue() -> None:
    assert gather_time(16 * 2**20) == GATHER_MAX
    small = gather_time(128 * 1024)  # 128 frames of a 1 Mbit/s bus: ~15 ms to fill
    assert small * 4 * 8_300 <= 128


def test_source_hands_frames_on_in_bounded_batches(
        pair: tuple[socket.socket, socket.socket], read_path: str) -> None:
    """The reader's loop on a real socket: every frame once, in order, in batches of at most
    BATCH_MAX, then idle; the loop ends when asked."""
    sender, receiver = pair
    count = 3 * BATCH_MAX + 7
    for number in range(count):
        sender.send(struct.pack("=IBBBB8s", 0x100 + number % 50, 8, 0, 0, 0,
                                number.to_bytes(8, "little")))
    health = SourceHealth()
    source = RawSocketCanSource("can0", health, "unused", [], fd=False, receive_buffer=2**20)
    batches: list[list[int]] = []
    stop = threading.Event()

    def on_frames(frames: list) -> None:
        health.frames += len(frames)
        batches.append([int.from_bytes(f.data, "little") for f in frames])

    def on_idle(now: float) -> None:
        if health.frames >= count:
            stop.set()

    thread = threading.Thread(target=source.receive,
                              args=(raw_socket(receiver, read_path=read_path), on_frames, on_idle,
                                    stop))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert [n for batch in batches for n in batch] == list(range(count))
    assert max(map(len, batches)) <= BATCH_MAX
    assert health.overflow == 0


@settings(deadline=None, max_examples=60)
@given(sent=st.lists(st.one_of(frames, fd_frames, st.binary(max_size=80)), min_size=1,
                     max_size=40),
       limit=st.integers(1, 50))
def test_recvmmsg_reads_what_recvmsg_reads(sent: list[bytes], limit: int) -> None:
    """The same datagrams, read in batches of `limit` by recvmmsg and one by one by recvmsg:
    the same frames, fields, data and rejections (timestamps differ: each send has its own)."""
    results = []
    for read_path in ("recvmmsg", "recvmsg"):
        sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with sender, receiver:
            receiver.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            for datagram in sent:
                if datagram:  # an empty datagram is no frame to either path
                    sender.send(datagram)
            raw, health, got = raw_socket(receiver, read_path=read_path), SourceHealth(), []
            while batch := drain(raw, health, limit):
                assert len(batch) <= limit
                got += batch
            results.append(([(*(getattr(f, name) for name in FIELDS), f.data) for f in got],
                            health.rejected))
            assert all(f.timestamp > 0 for f in got)
    assert results[0] == results[1]


def test_ancillary_items_split_as_recvmsg_lists_them() -> None:
    stamp = struct.pack("@ll", 1_780_000_000, 123_456_789)
    drops = struct.pack("=I", 7)
    control = b"".join(
        struct.pack("@Nii", socket.CMSG_LEN(len(data)), socket.SOL_SOCKET, kind).ljust(
            socket.CMSG_LEN(0), b"\0") + data.ljust(socket.CMSG_SPACE(len(data))
                                                    - socket.CMSG_LEN(0), b"\0")
        for kind, data in ((SO_TIMESTAMPNS, stamp), (SO_RXQ_OVFL, drops)))
    assert ancillary_items(control) == [(socket.SOL_SOCKET, SO_TIMESTAMPNS, stamp),
                                        (socket.SOL_SOCKET, SO_RXQ_OVFL, drops)]
    assert ancillary_items(b"") == []


def _control(seconds: int, nanoseconds: int, drops: int | None) -> bytes:
    """Control messages as the kernel writes them: the timestamp, then the drop count."""
    parts = [(SO_TIMESTAMPNS, struct.pack("@ll", seconds, nanoseconds))]
    if drops is not None:
        parts.append((SO_RXQ_OVFL, struct.pack("=I", drops)))
    return b"".join(
        struct.pack("@Nii", socket.CMSG_LEN(len(data)), socket.SOL_SOCKET, kind).ljust(
            socket.CMSG_LEN(0), b"\0") + data.ljust(socket.CMSG_SPACE(len(data))
                                                    - socket.CMSG_LEN(0), b"\0")
        for kind, data in parts)


@settings(deadline=None, max_examples=100)
@given(slots=st.lists(st.tuples(
    st.one_of(frames, fd_frames, st.binary(min_size=1, max_size=20)),
    st.integers(0, 2**40), st.integers(0, 999_999_999), st.none() | st.integers(1, 2**32 - 1)),
    min_size=1, max_size=30))
def test_a_batch_parsed_by_columns_is_each_frame_parsed_alone(
        slots: list[tuple[bytes, int, int, int | None]]) -> None:
    """`_take_batch` (numpy, a column at a time) against `parse_frame` and `kernel_time` on
    each datagram: every field, the exact float timestamp, drops, and rejections."""
    data = b"".join(frame.ljust(CANFD_MTU, b"\xee") for frame, *_ in slots)
    controls = [_control(*rest) for _, *rest in slots]
    received = Received(len(slots), data,
                        b"".join(c.ljust(ANCILLARY_SIZE, b"\0") for c in controls),
                        np.array([len(frame) for frame, *_ in slots], np.uint32),
                        np.array([len(c) for c in controls], np.uintp))
    raw, health, got = RawCanSocket.__new__(RawCanSocket), SourceHealth(), []
    raw.keys, raw.drops = None, 0
    _take_batch(raw, received, health, got)
    expected, rejected = [], 0
    for frame, seconds, nanoseconds, _ in slots:
        try:
            expected.append(parse_frame(frame, kernel_time(struct.pack(
                "@ll", seconds, nanoseconds))))
        except (MalformedFrame, struct.error):
            rejected += 1
    assert got == expected
    assert health.rejected.get("malformed_frame", 0) == rejected
    assert raw.drops == next((d for *_, d in reversed(slots) if d is not None), 0)
