"""Fuzz targets for every parser that takes input from outside the agent, and the runner of
tools/fuzz.

A target is a strategy of inputs and a check. Inputs are bytes: random ones, and mutations of
valid seeds (gpsd TPV and SKY lines, checksummed NMEA sentences, binary TPMS frames, candump
and ASC logs, control requests, a signed batch and event, a signed OTA update, config files).
A mutation that has to get past a checksum, a CRC or a signature to reach the code behind it
is framed or signed again (with fixed test keys, so that a failing input replays anywhere).
The check feeds one input to the parser the way the agent does and raises on a finding:

- an exception that is not one of the module's own errors (or not one its caller handles),
- an answer that breaks the module's contract: no reply on the control socket, or a server
  that stops answering; a frame whose time the sampler cannot use; measurements that depend
  on how the serial port split the bytes; a rejected receipt without a reason,
- `Hang`: one input took longer than the time limit.

`tests/fuzz/test_fuzz.py` runs each target for a bounded number of examples; `tools/fuzz` runs
them for as long as asked and counts inputs and failures per target (`main` below).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import resource
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import can
import cbor2
import pyarrow
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet.backend import (
    Backend,
    Pseudonyms,
    RowWriter,
    event_line,
    event_row,
    load_keyring,
    summary_line,
)
from fleet.dataset import sample_table
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st

from agent.config import schema as agent_config
from agent.config.schema import load_config
from agent.errors import AgentError
from agent.events.codec import EVENT_CONTENT_TYPE, EventBody, encode_event, json_like
from agent.events.fetch import CONTENT_TYPE as FETCH_CONTENT_TYPE
from agent.events.fetch import (
    FetchMemory,
    FetchRejected,
    FetchSource,
    check_fetch,
    fetch_event,
    sign_fetch,
)
from agent.ota.update import CONTENT_TYPE as OTA_CONTENT_TYPE
from agent.ota.update import (
    DbcEntry,
    Trust,
    UpdateRejected,
    check_update,
    load_trust,
    sign_update,
    stored_config,
)
from agent.output.batch import CONTENT_TYPE as BATCH_CONTENT_TYPE
from agent.runtime.control import Command, ControlServer, ControlUnavailable, request
from agent.sources.gpsd_json import GPS_CATALOGUE, GpsUpdate, parse_report
from agent.sources.health import SourceHealth
from agent.sources.replay import ReplaySource
from agent.sources.sensor_protocols import (
    WHEELS,
    Measurement,
    NmeaSentences,
    Rejected,
    SensorProtocol,
    TpmsBinaryFrames,
    crc16_ccitt,
    encode_tpms_frame,
    nmea_sentence,
)
from agent.wire.body import BatchBody, Series, SeriesKind, SignalDef, dictionary_id, encode_body
from agent.wire.cose import Signer
from agent.wire.dictionary import DICTIONARY_CONTENT_TYPE, encode_dictionary
from agent.wire.keys import key_id
from tests.helpers.ota_fixtures import LOCAL_CONFIG

# pyarrow's default allocator (jemalloc or mimalloc) reserves address space in large regions,
# so under memory_limit's address-space cap even a 64-byte allocation fails; the system
# allocator asks only for what is used, so the cap still finds unbounded allocations.
pyarrow.set_memory_pool(pyarrow.system_memory_pool())

REPO = Path(__file__).resolve().parents[2]
HANG_SECONDS = 10.0  # one input; generous, because CI shares its cores with other work

Check = Callable[[bytes], None]


class Finding(AssertionError):
    """A contract broken without an exception of the parser's own: `what` names the kind (it
    groups failures), the message says what this input did."""

    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__(f"{what}: {detail}" if detail else what)
        self.what = what


class Hang(BaseException):
    """One input ran past the time limit. A BaseException, so that a parser's own
    `except Exception` cannot turn it into one of its errors."""


def require(condition: object, what: str, detail: str = "") -> None:
    if not condition:
        raise Finding(what, detail)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `Hang` in the calling thread after `seconds` (SIGALRM also interrupts pure Python
    loops and the C loops that check for signals, such as the regex engine). Only the main
    thread receives signals: elsewhere the block runs without a limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(number: int, frame: FrameType | None) -> None:
        raise Hang(f"no result after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_limit(extra_mb: int) -> Iterator[None]:
    """Cap the address space at its current size plus `extra_mb` while fuzzing: an input that
    makes a parser allocate without bound then fails with MemoryError (a finding) instead of
    swapping a machine that others share."""
    with open("/proc/self/status", encoding="ascii") as status:
        size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size_kb * 1024 + extra_mb * 2**20
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass(frozen=True)
class Target:
    """`start(folder)` sets up what the parser needs (files, keys, a running server) in
    `folder` and yields the check; `examples` is the CI budget (a few seconds each)."""

    name: str
    about: str
    inputs: st.SearchStrategy[bytes]
    start: Callable[[Path], contextlib.AbstractContextManager[Check]]
    examples: int


# --- mutations: what gets random inputs past the first few bytes of a format ----------------

_EDITS = ("flip", "byte", "cut", "double", "insert", "field", "word", "truncate", "junk")
_NOTABLE_BYTES = b"\x00\x01\x7f\x80\xff\n\r\t #,*$.-"
_FIELD = frozenset(b"0123456789abcdefABCDEFxX.+-_eEnNiIaAfFtTrRuUlLsS")


def _span(data: bytearray, at: int, inside: Callable[[int], bool]) -> tuple[int, int]:
    """The run of bytes around `at` for which `inside` holds."""
    start = end = min(at, len(data))
    while start > 0 and inside(data[start - 1]):
        start -= 1
    while end < len(data) and inside(data[end]):
        end += 1
    return start, end


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], tokens: Sequence[bytes],
            max_edits: int = 6) -> bytes:
    """A seed with 1..max_edits edits: bytes flipped or set to notable values, spans cut or
    doubled, random bytes put in, and a number or word replaced by a token of the format (a
    huge number, NaN, a bracket...), which is what gets past a parser's first checks."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_edits))):
        edit = draw(st.sampled_from(_EDITS))
        at = draw(st.integers(0, len(data)))
        if edit == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "byte":
            data[at:at + 1] = bytes([draw(st.sampled_from(_NOTABLE_BYTES))])
        elif edit == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        elif edit == "double":
            data[at:at] = data[at:at + draw(st.integers(1, 32))]
        elif edit == "insert":
            data[at:at] = draw(st.sampled_from(tokens))
        elif edit == "field":
            start, end = _span(data, at, _FIELD.__contains__)
            data[start:end] = draw(st.sampled_from(tokens))
        elif edit == "word":
            start, end = _span(data, at, lambda byte: byte not in b" \t\r\n")
            data[start:end] = draw(st.sampled_from(tokens))
        elif edit == "truncate":
            del data[at:]
        elif edit == "junk":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def _thawed(node: Any) -> Any:
    """A copy whose maps and arrays can be edited (cbor2 gives some maps as frozendict), and
    whose edits cannot reach back into a seed or a strategy's sampled values."""
    if isinstance(node, Mapping):
        return {key: _thawed(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_thawed(value) for value in node]
    return node


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


@st.composite
def edited_tree(draw: st.DrawFn, tree: dict[Any, Any], values: st.SearchStrategy[Any],
                keys: st.SearchStrategy[Any], text_tokens: Sequence[bytes],
                max_edits: int = 3, focus: Sequence[Any] = ()) -> dict[Any, Any]:
    """A decoded document (CBOR or JSON) with 1..max_edits edits at any depth: a value
    replaced by a hostile one, removed, added, or changed a little (a number moved, its
    bytes or text mutated). With `focus`, only under those top-level keys: the rest stays
    valid, so that decoding gets as far as them."""
    tree = _thawed(tree)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = [path for path in _paths(tree) if not focus or path[:1] in [(k,) for k in focus]]
        path = draw(st.sampled_from(paths or [()]))
        if not path:
            tree[draw(keys)] = _thawed(draw(values))
            continue
        parent: Any = tree
        for step in path[:-1]:
            parent = parent[step]
        key, leaf = path[-1], parent[path[-1]]
        edit = draw(st.sampled_from(("replace", "remove", "add", "mutate")))
        if edit == "replace":
            parent[key] = _thawed(draw(values))
        elif edit == "remove":
            del parent[key]
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(keys)] = _thawed(draw(values))
        elif edit == "add":
            parent.insert(key, _thawed(draw(values)))
        elif isinstance(leaf, int) and not isinstance(leaf, bool):
            change = draw(st.sampled_from(("step", "scale", "huge")))
            parent[key] = (leaf + draw(st.integers(-2, 2)) if change == "step"
                           else leaf * draw(st.sampled_from([-1, 2**32, 10**6]))
                           if change == "scale" else draw(HUGE))
        elif isinstance(leaf, float):
            parent[key] = draw(st.floats())
        elif isinstance(leaf, bytes):
            parent[key] = draw(mutated([leaf], text_tokens))
        elif isinstance(leaf, str):
            parent[key] = draw(mutated([leaf.encode()], text_tokens)).decode("utf-8", "replace")
    return tree


# Values that break assumptions: beyond float and int64 ranges, past Python's 4300-digit
# int-to-str limit, not finite, of the wrong type.
EDGES = (2**63, -(2**63) - 1, 2**64, 2**53 + 1)


def _digits(count: int) -> int:
    """An integer of abs(count) digits, negative for a negative count (built when drawn:
    hypothesis prints its strategies, and Python refuses to print ints past 4300 digits)."""
    return (1 if count > 0 else -1) * 10 ** (abs(count) - 1)


# JSON cannot write an int of more than 4300 digits; CBOR can.
HUGE = st.sampled_from(EDGES) | st.sampled_from((400, -400, 4000)).map(_digits)
HUGE_CBOR = HUGE | st.sampled_from((5000, -5000)).map(_digits)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**66), 2**66), st.floats(),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, math.inf, math.nan]),
    st.text(max_size=12), st.sampled_from(["", "\x00", "~nosuchuser/x", "../x", "x" * 5000]))


def hostile_values(binary: bool) -> st.SearchStrategy[Any]:
    """JSON values (`binary` false) or CBOR values: nested lists and maps of them."""
    if binary:
        scalars = _SCALARS | HUGE_CBOR | st.binary(max_size=40)
        keys = st.text(max_size=6) | st.integers(-3, 3)
    else:
        scalars, keys = _SCALARS | HUGE, st.text(max_size=6)
    return st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(keys, children, max_size=3), max_leaves=8)


JSON_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"9" * 400, b"-0",
               b"0.0", b"1", b"-1", b"99999999999999999999", b"null", b"true", b"false",
               b"[]", b"{}", b'""', b'"', b"\\", b"\\u0000", b"\\ud800", b"[" * 64, b"{",
               b"}", b",", b":", b"\xff", b"\xc3", b"\x00")


# --- gpsd JSON --------------------------------------------------------------------------------

TPV = {"class": "TPV", "device": "/dev/ttyACM0", "mode": 3, "time": "2026-11-23T07:04:57.250Z",
       "lat": 48.137154, "lon": 11.576124, "altHAE": 560.0, "altMSL": 519.4, "speed": 13.9,
       "track": 271.5}
SKY = {"class": "SKY", "device": "/dev/ttyACM0", "hdop": 0.9, "uSat": 2,
       "satellites": [{"PRN": 3, "used": True}, {"PRN": 6, "used": True}, {"PRN": 9}]}
GPSD_SEEDS = (TPV, {**TPV, "mode": 2}, {"class": "TPV", "mode": 1}, SKY,
              {"class": "SKY", "satellites": [{"PRN": 3, "used": True}]},
              {"class": "VERSION", "release": "3.22", "proto_major": 3})
GPSD_KEYS = ("class", "mode", "time", "lat", "lon", "alt", "altHAE", "altMSL", "speed",
             "track", "hdop", "uSat", "satellites", "used")
GPS_TIMES = st.one_of(st.datetimes().map(lambda at: at.isoformat() + "Z"),
                      st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
                                       "0001-01-01T00:00:00", "9999-12-31T23:59:59+14:00",
                                       "2026-02-30T00:00:00Z", "Z", ""]))


def _gpsd_inputs() -> st.SearchStrategy[bytes]:
    documents = st.builds(
        lambda seed, edits: json.dumps({**seed, **edits}).encode(),
        st.sampled_from(GPSD_SEEDS),
        st.dictionaries(st.sampled_from(GPSD_KEYS), hostile_values(False) | GPS_TIMES,
                        max_size=4))
    trees = st.sampled_from(GPSD_SEEDS).flatmap(
        lambda seed: edited_tree(seed, hostile_values(False), st.sampled_from(GPSD_KEYS),
                                 JSON_TOKENS)).map(lambda tree: json.dumps(tree).encode())
    seeds = [json.dumps(seed).encode() for seed in GPSD_SEEDS]
    # Fixes in range, as gpsd sends them, with any time: what gets through to the time.
    fixes = st.builds(
        lambda mode, lat, lon, alt, speed, track, at: json.dumps(
            {"class": "TPV", "mode": mode, "lat": lat, "lon": lon, "altMSL": alt,
             "speed": speed, "track": track, "time": at}).encode(),
        st.sampled_from([2, 3]), st.floats(-90, 90), st.floats(-180, 180),
        st.floats(-1000, 100_000), st.floats(0, 1000), st.floats(0, 360), GPS_TIMES)
    nested = st.builds(lambda depth, opener: opener * depth, st.integers(1, 100_000),
                       st.sampled_from([b"[", b'{"a":', b'{"class":"SKY","satellites":[']))
    return st.one_of(documents, trees, fixes, mutated(seeds, JSON_TOKENS), nested,
                     st.binary(max_size=400))


def check_gpsd(data: bytes) -> None:
    """parse_report answers every line with an update, a rejection or None, never raises."""
    parsed = parse_report(data)
    if parsed is None or isinstance(parsed, Rejected):
        require(parsed is None or isinstance(parsed.reason, str), "rejection without reason")
        return
    require(isinstance(parsed, GpsUpdate), "not an update", repr(parsed))
    names = {entry.quantity for entry in GPS_CATALOGUE}
    for name, value in parsed.values:
        require(name in names, "a quantity outside the catalogue", name)
        require(value is None or math.isfinite(value), "a value that is not finite",
                f"{name} = {value!r}")
    require(parsed.fix_mode in (None, 0, 1, 2, 3), "an unknown fix mode", repr(parsed.fix_mode))
    require(parsed.gps_time is None or math.isfinite(parsed.gps_time), "a GPS time that is "
            "not finite", repr(parsed.gps_time))


@contextlib.contextmanager
def _stateless(check: Check, folder: Path) -> Iterator[Check]:
    yield check


# --- serial sensor protocols -------------------------------------------------------------------

NMEA_TOKENS = (b"TPMS", b"SUSP", b"FL", b"RR", b"XX", b"", b",", b"*", b"$", b"\r\n", b"\n",
               b"-0", b"1e3", b"nan", b"inf", b"1000.000001", b"9999999", b"-1", b"0.1234567",
               b"\xff", b"\x00", b"*00", b"*ZZ", b"x" * 90)
_NMEA_FIELDS = st.one_of(
    st.floats().map(repr), st.integers(-(10**9), 10**9).map(str), st.text("0123456789.-+e",
                                                                           max_size=12),
    st.sampled_from(["", "FL", "FR", "RL", "RR", "X", "1000", "1000.0", "150", "-40", "5.00",
                     "-0", "0000250.000001"]))


def _nmea_inputs() -> st.SearchStrategy[bytes]:
    def sentence(kind: str, wheel: str, fields: list[str]) -> bytes:
        body = ",".join([kind, wheel, *fields])
        if not body.isascii() or any(c in body for c in "\r\n*$"):
            return body.encode("utf-8", "replace")  # not framable: garbage of its own
        return nmea_sentence(body)

    sentences = st.builds(sentence, st.sampled_from(["TPMS", "SUSP", "GPGGA", ""]),
                          st.sampled_from([*WHEELS, "X", ""]), st.lists(_NMEA_FIELDS, max_size=5))
    # Readings in range, written as a sensor may write them (1 to 6 decimals, leading zeros).
    number = st.builds(lambda value, places, width: f"{value:0{width}.{places}f}",
                       st.floats(-40, 1000), st.integers(0, 6), st.integers(0, 9))
    readings = st.one_of(
        st.builds(lambda wheel, values: nmea_sentence(",".join(["TPMS", wheel, *values])),
                  st.sampled_from(WHEELS), st.lists(number, min_size=3, max_size=3)),
        st.builds(lambda wheel, value: nmea_sentence(f"SUSP,{wheel},{value}"),
                  st.sampled_from(WHEELS), number))
    seeds = [nmea_sentence("TPMS,FL,230.5,21.0,2.95"), nmea_sentence("SUSP,RR,312.4"),
             nmea_sentence("TPMS,RR,0,-40,0") + nmea_sentence("SUSP,FL,1000")]
    streams = st.lists(st.one_of(readings, sentences, mutated(seeds, NMEA_TOKENS),
                                 st.binary(max_size=100)), min_size=1, max_size=6).map(b"".join)
    return st.one_of(streams, st.binary(max_size=600))


def _tpms_frame_inputs() -> st.SearchStrategy[bytes]:
    def frame(payload: bytes) -> bytes:
        return TpmsBinaryFrames.SYNC + payload + crc16_ccitt(payload).to_bytes(2, "big")

    frames = st.binary(min_size=6, max_size=6).map(frame)
    seeds = [encode_tpms_frame("FL", 230.0, 21, 2.9), encode_tpms_frame("RR", 1000.0, 150, 5.0),
             encode_tpms_frame("FR", 0.0, -40, 0.0) * 2]
    tokens = (b"\x55", b"\xaa", b"\x55\xaa", TpmsBinaryFrames.SYNC * 3, b"\x00", b"\xff\xff",
              b"\x04", b"\x03")
    streams = st.lists(st.one_of(frames, mutated(seeds, tokens), st.binary(max_size=24)),
                       min_size=1, max_size=8).map(b"".join)
    return st.one_of(streams, st.binary(max_size=400))


def _sensor_check(protocol: type[SensorProtocol]) -> Check:
    quantities = {entry.quantity for entry in protocol.catalogue}

    def measured(decoded: list[Measurement | Rejected]) -> list[tuple[str, float]]:
        for item in decoded:
            if isinstance(item, Rejected):
                require(isinstance(item.reason, str) and item.reason, "rejection without reason")
                continue
            require(isinstance(item, Measurement), "neither a measurement nor a rejection",
                    repr(item))
            require(item.quantity in quantities, "a quantity outside the catalogue",
                    item.quantity)
            require(math.isfinite(item.value), "a value that is not finite", repr(item))
        return [(item.quantity, item.value) for item in decoded if isinstance(item, Measurement)]

    def check(data: bytes) -> None:
        """The port delivers bytes in pieces of any size: whole, byte by byte or in 7s, the
        same measurements must come out (rejections may be counted differently)."""
        whole = measured(protocol().feed(data))
        for size in (1, 7):
            decoder = protocol()
            pieces = [item for at in range(0, len(data), size)
                      for item in decoder.feed(data[at:at + size])]
            require(measured(pieces) == whole, "measurements depend on how the bytes arrive",
                    f"in pieces of {size}: {measured(pieces)!r}, whole: {whole!r}")

    return check


# --- recorded CAN logs (replay) ----------------------------------------------------------------

CANDUMP_SEED = b"""\
(1700000000.000000) can0 100#0102030405060708
(1700000000.010000) can1 1ABCDEF0#DEADBEEF
(1700000000.020000) can0 200##1000102030405060708090A0B
(1700000000.030000) can0 300#R4
(1700000000.040000) can0 20000080#0000000000000000
(1700000000.050000) vcan0 7FF# T
"""
CANDUMP_TOKENS = (b"nan", b"inf", b"-inf", b"1e400", b"-1", b"0", b"9" * 40, b"#", b"##", b"#R",
                  b"R", b"R99", b"#F", b"##", b"(", b")", b" ", b"can0", b"FFFFFFFF",
                  b"20000080", b"0" * 12, b"zz", b"\xff", b"T", b" R", b"\t")


def _candump_lines() -> st.SearchStrategy[bytes]:
    line = st.builds(
        lambda stamp, channel, can_id, data, flag: f"({stamp}) {channel} {can_id}#{data}{flag}",
        st.sampled_from(["1700000000.000000", "0", "-1.5", "nan", "inf", "1e400", "1e308", "",
                         "0x1"]) | st.floats().map(repr),
        st.sampled_from(["can0", "can1", "0", "7", ""]),
        st.sampled_from(["100", "7FF", "1ABCDEF0", "FFFFFFFF", "20000080", "A0000080", "", "-1",
                         "zz"]) | st.text("0123456789ABCDEF", max_size=10),
        st.sampled_from(["", "01", "0102030405060708", "R", "R8", "R99", "#1", "#", "#F0011",
                         "#1" + "00" * 64, "0", "-1", "zz"]) | st.text("0123456789abcdef#R",
                                                                   max_size=20),
        st.sampled_from(["", " R", " T", " X"]))
    return st.lists(line, min_size=1, max_size=8).map(lambda lines: "\n".join(lines).encode())


@functools.cache
def asc_seed() -> bytes:
    """An ASC log as python-can writes one: classic, extended, FD, remote and error frames on
    two channels."""
    out = io.StringIO()
    writer = can.ASCWriter(out)
    for message in (
            can.Message(timestamp=1700000000.0, arbitration_id=0x100, is_extended_id=False,
                        data=b"\x01\x02", channel=0),
            can.Message(timestamp=1700000000.01, arbitration_id=0x1ABCDEF, data=bytes(8),
                        channel=1),
            can.Message(timestamp=1700000000.02, arbitration_id=0x200, is_extended_id=False,
                        is_fd=True, bitrate_switch=True, data=bytes(range(12)), channel=0),
            can.Message(timestamp=1700000000.03, arbitration_id=0x300, is_extended_id=False,
                        is_remote_frame=True, dlc=4, channel=0),
            can.Message(timestamp=1700000000.04, is_error_frame=True, channel=0)):
        writer.on_message_received(message)
    text = out.getvalue()
    writer.stop()
    return text.encode()


ASC_TOKENS = (b"nan", b"inf", b"-1", b"1e400", b"0", b"99", b"x", b"100x", b"FFFFFFFFFx", b"d",
              b"r", b"Rx", b"Tx", b"CANFD", b"ErrorFrame", b"base", b"dec", b"hex",
              b"timestamps", b"relative", b"absolute", b"Begin Triggerblock", b"End TriggerBlock",
              b"date", b"\n", b"zz", b"\xff", b"9" * 40, b"Statistic:", b"J1939TP")


def _log_inputs(suffix: str) -> st.SearchStrategy[bytes]:
    if suffix == ".asc":
        return st.one_of(st.deferred(lambda: mutated([asc_seed()], ASC_TOKENS, max_edits=8)),
                         st.binary(max_size=400))
    return st.one_of(_candump_lines(), mutated([CANDUMP_SEED], CANDUMP_TOKENS, max_edits=8),
                     st.binary(max_size=400))


@contextlib.contextmanager
def _replay_session(suffix: str, folder: Path) -> Iterator[Check]:
    path = folder / f"fuzz{suffix}"

    def check(data: bytes) -> None:
        """The replay source's player thread, as the agent runs it, on the log: it ends (an
        error it logs is ours to show), every frame it puts on the source's bus has a time the
        event-time gate and the sampler can use, and every one is counted as played."""
        path.write_bytes(data)
        source = ReplaySource("fuzz", SourceHealth(), path, speed=0, loop=False, rebase=True)
        bus = source.open_bus()  # the source's own end, as its receive loop reads it
        stop = threading.Event()
        escaped: list[BaseException] = []

        def play() -> None:
            try:
                source._play(stop)  # the player thread's body
            except BaseException as exc:
                escaped.append(exc)

        player = threading.Thread(target=play, name="fuzz-replay", daemon=True)
        player.start()
        frames: list[can.Message] = []
        try:
            while True:
                # Read before draining: what the player sent before it ended is queued by then.
                ended = source.end_of_data()
                frame = bus.recv(0 if ended else 0.002)
                if frame is not None:
                    frames.append(frame)
                elif ended:
                    break
        finally:
            stop.set()
            player.join(HANG_SECONDS)
            bus.shutdown()
        if escaped:
            raise Finding("an exception escaped the player thread") from escaped[0]
        for frame in frames:
            require(math.isfinite(frame.timestamp), "a frame whose time is not finite reached "
                    "the agent", repr(frame))
        require(len(frames) == source.player.frames_played, "frames sent and frames counted "
                "differ", f"{len(frames)} on the bus, {source.player.frames_played} counted")

    yield check


# --- the control socket ------------------------------------------------------------------------

CONTROL_SEEDS = (b'{"command": "echo", "args": {"glob": "can0.*", "top": 10}}\n',
                 b'{"command": "fail"}\n', b'{"command": "flush", "args": {}}\n',
                 b'{"command": "nope", "args": []}\n')


def _control_inputs() -> st.SearchStrategy[bytes]:
    requests = st.builds(
        lambda document, newline: json.dumps(document).encode() + newline,
        st.fixed_dictionaries({"command": st.sampled_from(["echo", "fail", "flush", "nope"])
                               | hostile_values(False)},
                              optional={"args": hostile_values(False)}) | hostile_values(False),
        st.sampled_from([b"\n", b"", b"\r\n", b"\n\n{}"]))
    known = st.builds(
        lambda command, args: json.dumps({"command": command, "args": args}).encode() + b"\n",
        st.sampled_from(["echo", "fail", "flush"]),
        st.dictionaries(st.text(max_size=6), hostile_values(False), max_size=4))
    nested = st.builds(lambda depth, opener, tail: opener * depth + tail,
                       st.integers(1, 5000),
                       st.sampled_from([b"[", b'{"a":', b'{"command":"echo","args":{"a":']),
                       st.sampled_from([b"", b"\n"]))
    near_limit = st.builds(
        lambda size: b'{"command":"echo","args":{"s":"' + b"x" * size + b'"}}\n',
        st.integers(4050, 4100))
    return st.one_of(requests, known, mutated(CONTROL_SEEDS, JSON_TOKENS), nested, near_limit,
                     st.binary(max_size=5000))


@contextlib.contextmanager
def _handler_errors(raised: list[BaseException]) -> Iterator[None]:
    """What the control server's handler threads raise goes to `raised`: socketserver would
    print it and close the connection unanswered; kept, it lets the finding name it."""
    original = socketserver.BaseServer.handle_error

    def keep(server: socketserver.BaseServer, request: Any, address: Any) -> None:
        raised.append(sys.exc_info()[1] or RuntimeError("handler failed"))

    socketserver.BaseServer.handle_error = keep  # type: ignore[method-assign]
    try:
        yield
    finally:
        socketserver.BaseServer.handle_error = original  # type: ignore[method-assign]


def _failing_command(args: Any) -> None:
    raise RuntimeError("this command always fails")


@contextlib.contextmanager
def _control_session(folder: Path) -> Iterator[Check]:
    path = folder / "control.sock"
    server = ControlServer(path, {"echo": Command(dict), "fail": Command(_failing_command),
                                  "flush": Command(lambda args: "flushed", changes_state=True)})
    raised: list[BaseException] = []

    def check(data: bytes) -> None:
        """One connection carrying `data`: exactly one JSON answer comes back, and the server
        still answers a valid request afterwards."""
        raised.clear()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(HANG_SECONDS / 2)
            client.connect(str(path))
            # The server stops reading after one line (or MAX_REQUEST bytes) and closes.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                client.sendall(data)
                client.shutdown(socket.SHUT_WR)
            answer = b""
            try:
                while chunk := client.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            except TimeoutError as exc:
                raise Finding("no answer in time", f"got {answer[:100]!r}") from exc
        if not answer.endswith(b"\n"):
            cause = raised[0] if raised else None  # what the handler thread raised, if it did
            raise Finding("no answer", f"got {answer[:100]!r}") from cause
        require(answer.count(b"\n") == 1, "more than one answer", repr(answer[:200]))
        try:
            reply = json.loads(answer)
        except ValueError as exc:
            raise Finding("an answer that is not JSON", repr(answer[:200])) from exc
        require(isinstance(reply, dict) and isinstance(reply.get("ok"), bool),
                "an answer without ok", repr(reply)[:200])
        require(reply["ok"] or isinstance(reply.get("error"), str), "a refusal without error",
                repr(reply)[:200])
        try:
            still = request(path, "echo", {"still": "here"}, timeout=HANG_SECONDS / 2)
        except ControlUnavailable as exc:
            raise Finding("the server no longer answers a valid request") from exc
        require(still == {"still": "here"}, "a valid request answered wrongly", repr(still))

    with _handler_errors(raised):
        server.start()
        try:
            yield check
        finally:
            server.stop()


# --- signed documents: batches and events (backend), config updates (vehicle) ------------------

def _fixed_key(name: str) -> Ed25519PrivateKey:
    """A test key fixed by its name, so that a failing signed input replays anywhere."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


VEHICLE_KEY = _fixed_key("fuzz vehicle v1")
BACKEND_KEY = _fixed_key("fuzz backend")
PSEUDONYM_SECRET = bytes(range(32))
NOW = 1_800_000_000


def _write_public_key(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _sign(key: Ed25519PrivateKey, content_type: str, payload: bytes) -> bytes:
    return Signer(key, content_type).sign(payload)


def _zstd(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(body)  # declares its content size


DICTIONARY = (SignalDef("can0.Engine.Speed", "km/h", 0.01, 0.0, False, "last"),
              SignalDef("can0.Engine.Gear", "", 1, 0, False, "last", {0: "P", 3: "D"}),
              SignalDef("gps.lat", "deg", 1.0, 0.0, True, "last"),
              SignalDef("can0.Engine.Temp", "degC", 1, -40, False, "stats"),
              SignalDef("can0.Diag.Serial", "", 1, 0, False, "last", is_unsigned64=True))


def _batch_body(schema: int, seq: int) -> bytes:
    t0 = NOW * 1000
    series = (Series(0, SeriesKind.INT_LAST, (t0, t0 + 1000), ((1200, 1250),)),
              Series(1, SeriesKind.INT_LAST, (t0, t0 + 1000), ((3, 0),)),
              Series(2, SeriesKind.FLOAT_LAST, (t0 + 500,), ((48.137154,),)),
              Series(3, SeriesKind.INT_STATS, (t0,), ((60,), (90,), (300,), (4,))),
              Series(4, SeriesKind.INT_LAST, (t0,), ((-5,),)))
    return encode_body(BatchBody(
        vehicle="v1", boot=bytes(range(16)), seq=seq, t0_ms=t0, t1_ms=t0 + 60_000,
        clock="ntp", config_version=7, dbc_digest=bytes(32), health={"can0.frames": 42},
        dictionary_id=dictionary_id(DICTIONARY), dictionary=DICTIONARY, series=series,
        schema=schema, privacy={"consent": "full", "ver": 2}))


def _event_body() -> bytes:
    return zstandard.ZstdDecompressor().decompress(encode_event(EventBody(
        vehicle="v1", boot=bytes(range(16)), seq=3, type="trip_end", time_ms=NOW * 1000,
        clock="ntp", config_version=7, privacy={"consent": "full", "ver": 2},
        data={"distance_km": 12.5, "duration_s": 900}, positions={"end": (48.1, 11.5)})))


@functools.cache
def envelope_seeds() -> tuple[tuple[str, bytes], ...]:
    """(content type, CBOR body) of a schema-1 and a schema-2 batch, an event and a retained
    dictionary document."""
    return ((BATCH_CONTENT_TYPE, _batch_body(1, 0)), (BATCH_CONTENT_TYPE, _batch_body(2, 1)),
            (EVENT_CONTENT_TYPE, _event_body()),
            (DICTIONARY_CONTENT_TYPE, encode_dictionary(DICTIONARY)))


CBOR_TOKENS = (b"\x00", b"\xff", b"\x1b" + b"\xff" * 8, b"\x3b" + b"\xff" * 8, b"\xc2\x58\xff",
               b"\xf9\x7e\x00", b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\x9f", b"\xbf",
               b"\x80", b"\xa0", b"\x5f", b"\x7f", b"\xd8\x12", b"\xf7", b"\x81" * 64)
# What decoding reaches last, and what the backend computes with after decoding.
FOCUS = ("sig", "tb", "dict", "t0", "t1", "seq", "prv", "hlth", "t", "pos", "data", "veh")
BATCH_KEYS = st.sampled_from(["v", "veh", "boot", "seq", "t0", "t1", "clk", "cfg", "dbc", "hlth",
                              "did", "tb", "sig", "dict", "prv", "type", "t", "data", "pos",
                              "consent", "ver"])


def _signed_envelopes() -> st.SearchStrategy[bytes]:
    """Envelopes signed with the vehicle key around mutated bodies: they pass the signature
    check and reach decompression and decoding."""
    def sealed(content_type: str, body: bytes) -> bytes:
        return _sign(VEHICLE_KEY, content_type, _zstd(body))

    def structural(seed: tuple[str, bytes], focus: Sequence[str] = ()) -> st.SearchStrategy[bytes]:
        return edited_tree(cbor2.loads(seed[1]), hostile_values(True), BATCH_KEYS, CBOR_TOKENS,
                           focus=focus).map(lambda tree: sealed(seed[0], cbor2.dumps(tree)))

    def bytewise(seed: tuple[str, bytes]) -> st.SearchStrategy[bytes]:
        return mutated([seed[1]], CBOR_TOKENS).map(lambda body: sealed(seed[0], body))

    def compressed(seed: tuple[str, bytes]) -> st.SearchStrategy[bytes]:
        return mutated([_zstd(seed[1])], CBOR_TOKENS).map(
            lambda payload: _sign(VEHICLE_KEY, seed[0], payload))

    return st.deferred(lambda: st.sampled_from(envelope_seeds()).flatmap(
        lambda seed: st.one_of(structural(seed), structural(seed, FOCUS), bytewise(seed),
                               compressed(seed))))


def _cose_inputs() -> st.SearchStrategy[bytes]:
    """Envelopes whose COSE structure is mutated, signed again where the signature covers
    what changed (the protected header)."""
    def rebuilt(tree: Any) -> bytes:
        if isinstance(tree, list) and len(tree) == 4 and all(
                isinstance(item, bytes) for item in (tree[0], tree[2])):
            tree[3] = VEHICLE_KEY.sign(cbor2.dumps(["Signature1", tree[0], b"", tree[2]]))
        return cbor2.dumps(cbor2.CBORTag(18, tree))

    def parts(seed: tuple[str, bytes]) -> dict[str, Any]:
        envelope = cbor2.loads(_sign(VEHICLE_KEY, seed[0], _zstd(seed[1])))
        protected, unprotected, payload, signature = envelope.value
        return {"array": [protected, unprotected, payload, signature],
                "headers": cbor2.loads(protected)}

    def assemble(tree: dict[str, Any], resign: bool) -> bytes:
        array = tree.get("array")
        if resign and isinstance(array, list) and array:
            headers = tree.get("headers")
            array[0] = cbor2.dumps(headers) if headers is not None else array[0]
            return rebuilt(array)
        return cbor2.dumps(cbor2.CBORTag(18, array))

    return st.deferred(lambda: st.builds(
        assemble,
        st.sampled_from(envelope_seeds()).flatmap(
            lambda seed: edited_tree(parts(seed), hostile_values(True),
                                     st.sampled_from([1, 3, 4, 5, -8, "kid"]), CBOR_TOKENS)),
        st.booleans()))


@functools.cache
def _valid_envelopes() -> tuple[bytes, ...]:
    return tuple(_sign(VEHICLE_KEY, content_type, _zstd(body))
                 for content_type, body in envelope_seeds())


def _backend_inputs() -> st.SearchStrategy[bytes]:
    return st.one_of(_signed_envelopes(), _signed_envelopes(), _cose_inputs(),
                     st.deferred(lambda: mutated(_valid_envelopes(), CBOR_TOKENS)),
                     st.binary(max_size=400))


@contextlib.contextmanager
def _backend_session(folder: Path) -> Iterator[Check]:
    keyring, bindings = load_keyring([f"v1={_write_public_key(VEHICLE_KEY, folder / 'v1.pub')}"])
    pseudonyms = Pseudonyms(PSEUDONYM_SECRET, 86400.0)

    def check(data: bytes) -> None:
        """What tools/backend does with one message, as a batch and as an event: receive it
        (anything gives a Receipt, a rejected one with its reason), print its line, write its
        rows as JSON Lines, and print the delivery report."""
        backend = Backend(keyring, bindings, pseudonyms)
        receipt = backend.receive(data)
        require(receipt.ok or receipt.error, "a batch rejected without a reason")
        summary_line(receipt)
        if receipt.ok and receipt.body is not None and not receipt.duplicate:
            rows = backend.rows(receipt.body)
            if rows is not None:
                RowWriter(io.StringIO(), "jsonl").write(rows)
                dictionary = backend.dictionaries.lookup(receipt.body.dictionary_id)
                require(dictionary is not None, "rows without a dictionary")
                sample_table(receipt.body, dictionary)  # the Parquet data set's table
        # The same bytes as a retained dictionary document (docs/wire-format.md §4.9).
        backend.receive_dictionary(data)
        event = backend.receive_event(data)
        require(event.ok or event.error, "an event rejected without a reason")
        if event.ok and event.event is not None:
            event_line(event)
            RowWriter(io.StringIO(), "jsonl").write(iter([event_row(event.event)]))
        json.dumps(backend.report())

    yield check


OTA_SOURCES = ('[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "bus1"\n'
               'dbc = ["{}"]\n')
OTA_UPDATE = """\
[sampling]
period = 0.5

[[sampling.signals]]
match = "can0.ESP_VehicleSpeed.*"
mode = "stats"

[batch]
window = 10.0

[privacy]
consent = "vehicle-health"

[[privacy.zones]]
name = "home"
center = [48.1, 11.5]
radius_m = 200.0

[events]
enabled = true
"""
OTA_FOCUS = ("version", "issued_at", "expires_at", "target", "dbc")
OTA_KEYS = st.sampled_from(["type", "version", "issued_at", "expires_at", "target", "vehicle",
                            "group", "config", "dbc", "sha256", "content", "vehicle.dbc",
                            "../vehicle.dbc", "/etc/hostname", "a\x00b.dbc", "x" * 300, "",
                            "fleet/new.ARXML", "~nosuchuser/x.dbc"])


@functools.cache
def ota_seeds() -> tuple[bytes, ...]:
    """CBOR documents of updates this vehicle accepts: a config change, sources whose DBC is
    on the vehicle, and sources with a delivered DBC."""
    content = (REPO / "dbc" / "vehicle.dbc").read_bytes()
    digest = hashlib.sha256(content).digest()
    signer = Signer(BACKEND_KEY, OTA_CONTENT_TYPE)
    envelopes = (
        sign_update(signer, version=4, config_text=OTA_UPDATE,
                    expires_at=NOW + 3600, vehicle="car-1", issued_at=NOW),
        sign_update(signer, version=5, config_text=OTA_SOURCES.format("vehicle.dbc"),
                    expires_at=NOW + 3600, group="eu-west", issued_at=NOW,
                    dbc={"vehicle.dbc": DbcEntry(digest)}),
        sign_update(signer, version=6, config_text=OTA_SOURCES.format("fleet/new.dbc"),
                    expires_at=NOW + 3600, vehicle="car-1", issued_at=NOW,
                    dbc={"fleet/new.dbc": DbcEntry(digest, content)}))
    return tuple(cbor2.loads(envelope).value[2] for envelope in envelopes)


def _ota_inputs() -> st.SearchStrategy[bytes]:
    def signed(document: bytes) -> bytes:
        return _sign(BACKEND_KEY, OTA_CONTENT_TYPE, document)

    def edited(focus: Sequence[str]) -> st.SearchStrategy[bytes]:
        return st.deferred(lambda: st.sampled_from(ota_seeds()).flatmap(
            lambda seed: edited_tree(cbor2.loads(seed), hostile_values(True), OTA_KEYS,
                                     TOML_TOKENS + CBOR_TOKENS, focus=focus)).map(cbor2.dumps))

    def with_config(seed: bytes, text: bytes) -> bytes:
        return cbor2.dumps({**cbor2.loads(seed), "config": text.decode("utf-8", "replace")})

    texts = [OTA_UPDATE.encode(), *(OTA_SOURCES.format(name).encode()
                                    for name in ("vehicle.dbc", "fleet/new.dbc"))]
    configs = st.deferred(lambda: st.builds(
        with_config, st.sampled_from(ota_seeds()),
        mutated(texts, TOML_TOKENS, max_edits=3) | _config_edits([OTA_UPDATE, *(
            OTA_SOURCES.format(name) for name in ("vehicle.dbc", "fleet/new.dbc"))])))
    return st.one_of(edited(()).map(signed), edited(OTA_FOCUS).map(signed), configs.map(signed),
                     st.deferred(lambda: mutated(ota_seeds(), CBOR_TOKENS)).map(signed),
                     st.deferred(lambda: mutated([signed(seed) for seed in ota_seeds()],
                                                 CBOR_TOKENS)),
                     st.binary(max_size=400))


@contextlib.contextmanager
def _ota_session(folder: Path) -> Iterator[Check]:
    local = folder / "config.toml"
    local.write_text(LOCAL_CONFIG, encoding="utf-8")
    (folder / "vehicle.dbc").write_bytes((REPO / "dbc" / "vehicle.dbc").read_bytes())
    _write_public_key(BACKEND_KEY, folder / "backend.pub")
    trust = load_trust(load_config(local))

    def check(data: bytes) -> None:
        """An update from MQTT, and the same envelope read back from the state folder at
        start-up: accepted, or UpdateRejected with a reason; nothing else."""
        for read in (lambda: check_update(data, trust, floor=3, local_config=local,
                                          dbc_store=folder / "store", now=NOW),
                     lambda: stored_config(data, trust, local_config=local,
                                           dbc_store=folder / "store")):
            try:
                read()
            except UpdateRejected as exc:
                require(exc.reason and str(exc), "a rejection without reason or message")

    yield check


# --- fetch-on-demand requests ------------------------------------------------------------------

FETCH_FOCUS = ("id", "issued_at", "expires_at", "signals", "last_ms", "from_ms", "to_ms",
               "max_samples")
FETCH_KEYS = st.sampled_from(["type", "id", "issued_at", "expires_at", "target", "vehicle",
                              "signals", "last_ms", "from_ms", "to_ms", "max_samples", "",
                              "x" * 300])


@functools.cache
def fetch_seeds() -> tuple[bytes, ...]:
    """CBOR documents of requests this vehicle accepts: a look-back, and a range."""
    signer = Signer(BACKEND_KEY, FETCH_CONTENT_TYPE)
    envelopes = (
        sign_fetch(signer, vehicle="car-1", signals=["can0.*", "gps.lat"], last_ms=60_000,
                   max_samples=2, issued_at=NOW, expires_at=NOW + 300, request_id=bytes(16)),
        sign_fetch(signer, vehicle="car-1", signals=["*"], from_ms=NOW * 1000 - 5000,
                   to_ms=NOW * 1000, max_samples=3, issued_at=NOW, expires_at=NOW + 60,
                   request_id=bytes(range(16))))
    return tuple(cbor2.loads(envelope).value[2] for envelope in envelopes)


def _fetch_inputs() -> st.SearchStrategy[bytes]:
    def signed(document: bytes) -> bytes:
        return _sign(BACKEND_KEY, FETCH_CONTENT_TYPE, document)

    def edited(focus: Sequence[str]) -> st.SearchStrategy[bytes]:
        return st.deferred(lambda: st.sampled_from(fetch_seeds()).flatmap(
            lambda seed: edited_tree(cbor2.loads(seed), hostile_values(True), FETCH_KEYS,
                                     CBOR_TOKENS, focus=focus)).map(cbor2.dumps))

    return st.one_of(edited(()).map(signed), edited(FETCH_FOCUS).map(signed),
                     st.deferred(lambda: mutated(fetch_seeds(), CBOR_TOKENS)).map(signed),
                     st.deferred(lambda: mutated([signed(seed) for seed in fetch_seeds()],
                                                 CBOR_TOKENS)),
                     st.binary(max_size=400))


@contextlib.contextmanager
def _fetch_session(folder: Path) -> Iterator[Check]:
    public = BACKEND_KEY.public_key()
    trust = Trust({key_id(public): public}, "car-1", frozenset({"eu-west"}), 1 << 20)
    samples = {"can0.A.x": [(NOW * 1000 - t, 1.0) for t in range(0, 9000, 700)],
               "gps.lat": [(NOW * 1000 - 100, 48.1)]}

    def capture(keys: Sequence[str], from_ms: int, to_ms: int) -> dict[str, Any]:
        return {k: [(t, v) for t, v in samples[k] if from_ms <= t <= to_ms]
                for k in keys if k in samples}

    source = FetchSource(tuple(samples), NOW * 1000, capture, lambda event: None)

    def check(data: bytes) -> None:
        """A request from MQTT: accepted (then its event is built), or FetchRejected with a
        reason and a message; nothing else. A fresh memory each time: no seed is a replay."""
        try:
            request = check_fetch(data, trust, FetchMemory(folder), now=NOW)
        except FetchRejected as exc:
            require(exc.reason and exc.message, "a rejection without reason or message")
            return
        finally:
            (folder / "ota" / "fetch-seen.json").unlink(missing_ok=True)
        event = fetch_event(request, source, NOW * 1000)
        require(sum(map(len, event.data["samples"].values())) <= request.max_samples,
                "more samples than max_samples")
        json_like(event.data, "data")

    yield check


# --- config.toml -------------------------------------------------------------------------------

TOML_TOKENS = (b"0", b"-1", b"1.5", b"nan", b"inf", b"-inf", b"9223372036854775807",
               b"-9223372036854775808", b"1e400", b"true", b'"x"', b'""', b'"~nosuchuser/x"',
               b'"\\u0000"', b'"/dev/null"', b"[]", b"[1, 2]", b"[[1, 2], [3, 4], [5, 6]]",
               b'["a", 1]', b"{}", b"{ a = 1 }", b"1979-05-27T07:32:00Z", b"07:32:00",
               b'"virtual"', b'"replay"', b'"gpsd"', b'"serial"', b'"stats"', b'"off"',
               b"[48.1, 11.5]", b'"*"', b"=", b"\n", b"#", b"[[sources]]\n", b"[privacy]\n",
               b"[[privacy.zones]]\n", b"[[events.triggers]]\n", b"[sampling]\n",
               b"[[sampling.signals]]\n", b"[" * 40, b"\xff", b"'", b'"""')
CONFIG_SEED = """\
version = 9

[vehicle]
id = "car-1"
groups = ["eu-west"]

[[sources]]
name = "can0"
type = "replay"
dbc = ["dbc/vehicle.dbc"]
path = "dbc/drive.log.gz"
speed = 0
channel = "can1"

[[sources]]
name = "gps"
type = "gpsd"
port = 2947
stale_after = 5.0

[[sources]]
name = "tpms"
type = "serial"
port = "/dev/ttyTPMS"
protocol = "tpms-binary"

[sampling]
period = 1.0
max_lateness = 2.0

[[sampling.signals]]
match = "can0.*"
mode = "stats"
period = 0.5

[batch]
window = 30.0
schema = 1

[keys]
signing_key = "~/vehicle.key"

[uplink]
tls = false

[ota]
trusted_keys = ["backend.pub"]

[privacy]
consent = "vehicle-health"
consent_version = 2

[[privacy.classes]]
match = "can0.Cabin.*"
class = "occupant"

[[privacy.zones]]
name = "home"
center = [48.1, 11.5]
radius_m = 200.0

[[privacy.zones]]
name = "depot"
polygon = [[48.0, 11.0], [48.0, 11.1], [48.1, 11.1]]

[privacy.pseudonym]
enabled = true
key = "pseudonym.key"

[events]
enabled = true

[[events.triggers]]
name = "overheat"
signal = "can0.Engine.Temp"
above = 110.0
capture = ["can0.Engine.*"]
"""


@dataclass(frozen=True)
class _Verbatim:
    """TOML text put in as it is (a value nested thousands deep, which the writer below would
    recurse into)."""

    text: str


def _toml_key(key: object) -> str:
    text = str(key)
    return text if text and all(c.isascii() and (c.isalnum() or c in "-_") for c in text) \
        else json.dumps(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, _Verbatim):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else "inf" if value == math.inf \
            else "-inf" if value == -math.inf else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if value is None:  # TOML has no null: an empty table, a wrong type for any key
        return "{}"
    return json.dumps(str(value))  # JSON's string escapes are TOML's


def toml_text(document: dict[str, Any], prefix: str = "") -> str:
    """A (mutated) document as TOML: values, then tables and arrays of tables."""
    def is_tables(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)

    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for key, value in document.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if isinstance(value, dict):
            lines += [f"[{name}]", toml_text(value, name)]
        elif is_tables(value):
            for table in value:
                lines += [f"[[{name}]]", toml_text(table, name)]
    return "\n".join(lines)


# Values that config.toml's keys do not expect: paths no one can resolve, nesting deeper
# than the parser's recursion, the names of other choices.
TOML_VALUES = hostile_values(False) | st.sampled_from([
    "~nosuchuser/key", "~", "a\x00b", "/dev/null", "", "virtual", "replay", "gpsd", "serial",
    "stats", "off", "tpms-binary", "*", [48.1, 11.5], [[48.0, 11.0], [48.0, 11.1], [48.1, 11.1]],
    {"name": "x"}, [{"name": "x"}]]) | st.builds(
        lambda depth, opener, closer: _Verbatim(opener * depth + "1" + closer * depth),
        st.integers(1, 5000), st.sampled_from(["[", "{a = "]), st.sampled_from(["]", "}"]))
# Every key config.toml knows (the fields of agent/config/schema.py's dataclasses; `class_` is
# written `class`), so that an edit adds keys the builder has to check.
CONFIG_KEYS = st.sampled_from(sorted({
    spec.name.rstrip("_") for value in vars(agent_config).values()
    if isinstance(value, type) and dataclasses.is_dataclass(value)
    for spec in dataclasses.fields(value)}))


def _config_edits(seeds: Sequence[str], focus: Sequence[str] = ()) -> st.SearchStrategy[bytes]:
    """Config files whose parsed documents are edited and written back as TOML: every key
    gets values of the wrong type, out of range, or nested too deep."""
    return st.sampled_from(seeds).flatmap(
        lambda seed: edited_tree(tomllib.loads(seed), TOML_VALUES, CONFIG_KEYS, TOML_TOKENS,
                                 focus=focus)).map(lambda tree: toml_text(tree).encode())


def _config_inputs() -> st.SearchStrategy[bytes]:
    seeds = [(REPO / "config.toml").read_text(encoding="utf-8"), CONFIG_SEED]
    return st.one_of(_config_edits(seeds), _config_edits(seeds),
                     mutated([seed.encode() for seed in seeds], TOML_TOKENS, max_edits=4),
                     st.binary(max_size=400))


@contextlib.contextmanager
def _config_session(folder: Path) -> Iterator[Check]:
    path = folder / "config.toml"

    def check(data: bytes) -> None:
        """The agent reading its config file: a config, or ConfigError (an AgentError) that
        says what to fix."""
        path.write_bytes(data)
        try:
            load_config(path)
        except AgentError as exc:
            require(str(exc), "an error without a message")

    yield check


# --- the targets -------------------------------------------------------------------------------

TARGETS = (
    Target("gpsd-json", "agent/sources/gpsd_json.py parse_report on gpsd lines",
           st.deferred(_gpsd_inputs), functools.partial(_stateless, check_gpsd), 400),
    Target("nmea", "agent/sources/sensor_protocols.py NmeaSentences on a serial byte stream",
           st.deferred(_nmea_inputs),
           functools.partial(_stateless, _sensor_check(NmeaSentences)), 300),
    Target("tpms-binary",
           "agent/sources/sensor_protocols.py TpmsBinaryFrames on a serial byte stream",
           st.deferred(_tpms_frame_inputs),
           functools.partial(_stateless, _sensor_check(TpmsBinaryFrames)), 300),
    Target("candump-log", "the replay source's player thread on a candump -L .log file",
           st.deferred(lambda: _log_inputs(".log")), functools.partial(_replay_session, ".log"),
           150),
    Target("asc-log", "the replay source's player thread on a Vector .asc file",
           st.deferred(lambda: _log_inputs(".asc")), functools.partial(_replay_session, ".asc"),
           150),
    Target("control-socket", "agent/runtime/control.py ControlServer, one connection per input",
           st.deferred(_control_inputs), _control_session, 200),
    Target("backend", "Backend.receive / receive_event and what tools/backend prints of them",
           st.deferred(_backend_inputs), _backend_session, 300),
    Target("ota-update", "agent/ota/update.py check_update and stored_config on an update envelope",
           st.deferred(_ota_inputs), _ota_session, 200),
    Target("fetch-request", "agent/events/fetch.py check_fetch and fetch_event on a request",
           st.deferred(_fetch_inputs), _fetch_session, 200),
    Target("config-toml", "agent/config/schema.py load_config on a config file",
           st.deferred(_config_inputs), _config_session, 300),
)
TARGETS_BY_NAME = {target.name: target for target in TARGETS}


# --- the runner: inputs tried and failures per target, for as long as asked --------------------

@dataclass
class Failure:
    """One kind of failure (its signature), how often inputs caused it, where the first was
    raised (file:line), and the first and the shortest input that caused it."""

    signature: str
    error: str
    raised_at: str
    count: int
    first: bytes
    shortest: bytes


@dataclass
class Tally:
    target: str
    tried: int = 0
    failed: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    failures: dict[str, Failure] = field(default_factory=dict)

    def record(self, data: bytes, error: BaseException) -> None:
        self.failed += 1
        key = signature(error)
        known = self.failures.get(key)
        if known is None:
            raised = error.__cause__ if isinstance(error, Finding) else error
            at = "" if raised is None else _origin(raised, exact=True)
            self.failures[key] = Failure(key, describe(error), at, 1, data, data)
            return
        known.count += 1
        if len(data) < len(known.shortest):
            known.shortest = data

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "inputs": self.tried, "failures": self.failed,
                "seconds": round(self.seconds, 1), "slowest_input_s": round(self.slowest, 3),
                "kinds": [{"signature": f.signature, "error": f.error, "raised_at": f.raised_at,
                           "count": f.count, "first": shorten(f.first),
                           "shortest": shorten(f.shortest)}
                          for f in self.failures.values()]}


def _origin(error: BaseException, exact: bool) -> str:
    """Where `error` was raised: the innermost frame in agent/, and the innermost of all when
    that is elsewhere (python-can, the standard library) as a file, or with `exact` as a
    file:line. Failures group by the inexact form: one bug of ours that a library reaches
    from several lines is one kind."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"

    def place(frame: traceback.FrameSummary, line: bool = True) -> str:
        name = frame.filename
        for root in (str(REPO) + os.sep, os.sep + "site-packages" + os.sep):
            if root in name:
                name = name.split(root, 1)[1]
        return f"{name}:{frame.lineno}" if line else name

    ours = [frame for frame in frames if f"{os.sep}agent{os.sep}" in frame.filename]
    innermost = place(frames[-1], exact)
    if not ours:
        return innermost
    at = place(ours[-1])
    return at if ours[-1] is frames[-1] else f"{at} (raised in {innermost})"


def signature(error: BaseException) -> str:
    """What groups failures: the kind of finding or exception, and where it comes from."""
    if isinstance(error, Finding):
        cause = error.__cause__
        return error.what if cause is None else f"{error.what}: {signature(cause)}"
    return f"{type(error).__name__} at {_origin(error, exact=False)}"


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        text += f" (from {type(error.__cause__).__name__}: {error.__cause__})"
    return text[:300]


def shorten(data: bytes, limit: int = 160) -> str:
    text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


def explore(target: Target, folder: Path, *, seconds: float | None = None,
            examples: int | None = None, hang: float = HANG_SECONDS) -> Tally:
    """Feed `target` generated inputs for `seconds`, or `examples` inputs; count them and
    keep every failure (the run goes on after one: a long run counts them all)."""
    tally = Tally(target.name)
    started = time.monotonic()
    deadline = None if seconds is None else started + seconds
    with target.start(folder) as check:

        def probe(data: bytes) -> None:
            tally.tried += 1
            began = time.monotonic()
            try:
                with time_limit(hang):
                    check(data)
            except (Exception, Hang) as error:
                tally.record(data, error)
            tally.slowest = max(tally.slowest, time.monotonic() - began)

        budget = examples if examples is not None else 50
        while True:
            tried, round_started = tally.tried, time.monotonic()
            # Generation only, no shrinking and no database: every input is new, and a failure
            # is counted here instead of ending the round. Rounds of about 2 s: each starts
            # from a fresh random seed and the deadline is checked between them.
            settings(max_examples=budget, deadline=None, database=None, phases=[Phase.generate],
                     suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)(
                given(target.inputs)(probe))()
            remaining = 0.0 if deadline is None else deadline - time.monotonic()
            if examples is not None or remaining <= 0:
                break
            rate = max(1, tally.tried - tried) / max(1e-3, time.monotonic() - round_started)
            budget = max(1, int(rate * min(remaining, 2.0)))
    tally.seconds = time.monotonic() - started
    return tally


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/fuzz",
        description="Fuzz the agent's parsers of outside input (tests/fuzz/targets.py) for as "
                    "long as asked; print per target the inputs tried, the failures and the "
                    "first failing input. Exit 1 if any input failed.",
        epilog="targets: " + "; ".join(f"{t.name}: {t.about}" for t in TARGETS))
    parser.add_argument("--seconds", type=float, default=10.0, metavar="N",
                        help="seconds per target (default: 10)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS_BY_NAME),
                        metavar="NAME", help="run only this target (repeatable; default: all)")
    parser.add_argument("--hang", type=float, default=HANG_SECONDS, metavar="S",
                        help=f"an input running longer is a failure (default: {HANG_SECONDS:g})")
    parser.add_argument("--memory-mb", type=int, default=1024, metavar="MB",
                        help="address space allowed beyond the start-up size; an input that "
                             "needs more fails with MemoryError (default: 1024)")
    parser.add_argument("--json", action="store_true", help="one JSON document for scripts")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # What the parsers log on bad input (a replay that cannot go on...) is expected here.
    logging.disable(logging.CRITICAL)
    tallies = []
    with contextlib.ExitStack() as restore, memory_limit(args.memory_mb):
        restore.callback(logging.disable, logging.NOTSET)
        for name in args.target or [target.name for target in TARGETS]:
            with contextlib.ExitStack() as stack:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix=f"fuzz-{name}-")))
                tally = explore(TARGETS_BY_NAME[name], folder, seconds=args.seconds,
                                hang=args.hang)
            tallies.append(tally)
            if not args.json:
                _print_tally(tally)
    if args.json:
        print(json.dumps({"seconds_per_target": args.seconds,
                          "targets": [tally.summary() for tally in tallies]}, indent=2))
    return 1 if any(tally.failed for tally in tallies) else 0


def _print_tally(tally: Tally) -> None:
    rate = tally.tried / max(tally.seconds, 1e-9)
    print(f"{tally.target:15} {tally.tried:9} inputs {tally.failed:7} failures  "
          f"{rate:8.0f}/s  slowest {tally.slowest:.3f} s", flush=True)
    for failure in tally.failures.values():
        print(f"    {failure.count} x {failure.signature}\n"
              f"      {failure.error}\n"
              + (f"      raised at {failure.raised_at}\n" if failure.raised_at else "") +
              f"      first:    {shorten(failure.first)}\n"
              f"      shortest: {shorten(failure.shortest)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
