"""The batch body: a self-describing CBOR document of columnar, delta-coded samples.

Pure functions only; docs/wire-format.md is the normative description and must change with
this file. Integer columns are zigzag-encoded deltas written as LEB128 varints (runs of equal
values and steady clocks become runs of zero bytes, which zstd then all but erases); float
columns are little-endian IEEE 754 doubles.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from operator import attrgetter
from typing import Any, NamedTuple

import cbor2
import numpy as np

from agent.errors import WireFormatError

# Schema 2 (the default) carries the series as five flat columns; schema 1, one CBOR array per
# series, is still written on request (`[batch] schema = 1`) and always read.
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
MAX_SIGNALS = 65535  # signal indices 0..65534 (the plan refuses more)

# Bounds checked at decode (docs/wire-format.md §4.8), so that nothing after decoding (the
# backend's lines and rows, a pseudonym's period, a date) meets a value it cannot handle.
# CBOR's integers without a bignum tag run from -2**64 to 2**64 - 1; a bignum is never sent.
INT_MIN = -(1 << 64)
UINT64_MAX = (1 << 64) - 1
# Window and event times: the Unix epoch to 9999-12-31T23:59:59.999Z, the last millisecond a
# calendar date (and Python's datetime) can name; well inside int64.
MAX_TIME_MS = 253_402_300_799_999


class SeriesKind(IntEnum):
    INT_LAST = 0
    FLOAT_LAST = 1
    INT_STATS = 2
    FLOAT_STATS = 3

    @property
    def is_float(self) -> bool:
        return self in (SeriesKind.FLOAT_LAST, SeriesKind.FLOAT_STATS)

    @property
    def is_stats(self) -> bool:
        return self in (SeriesKind.INT_STATS, SeriesKind.FLOAT_STATS)


@dataclass(frozen=True)
class SignalDef:
    """A dictionary entry: how to turn a signal's raw values into physical ones."""

    key: str
    unit: str
    scale: int | float
    offset: int | float
    is_float: bool
    mode: str
    choices: Mapping[int, str] | None = None
    # Type "u": an unsigned 64-bit signal, whose raw values at or above 2**63 are carried as
    # their int64 bit pattern (negative on the wire).
    is_unsigned64: bool = False

    def physical(self, raw: int | float) -> int | float:
        """The physical value, computed as cantools does (`raw * scale + offset`)."""
        if self.is_unsigned64 and raw < 0:
            raw += 1 << 64
        return raw * self.scale + self.offset


@dataclass(frozen=True)
class Series:
    """Samples of one signal. `columns` is (values,) or (min, max, sum, count)."""

    signal: int
    kind: SeriesKind
    times_ms: tuple[int, ...]
    columns: tuple[tuple[int | float, ...], ...]


@dataclass(frozen=True)
class BatchBody:
    vehicle: str
    boot: bytes
    seq: int
    t0_ms: int
    t1_ms: int
    clock: str
    config_version: int
    dbc_digest: bytes
    health: Mapping[str, int]
    dictionary_id: bytes
    dictionary: tuple[SignalDef, ...] | None
    series: tuple[Series, ...]
    schema: int = SCHEMA_VERSION
    privacy: Mapping[str, Any] | None = None

    @property
    def sample_count(self) -> int:
        return sum(map(len, map(attrgetter("times_ms"), self.series)))

    @property
    def highest_signal(self) -> int:
        """The highest signal index of the series (-1 without any): within the dictionary?"""
        return max(map(attrgetter("signal"), self.series), default=-1)


def dictionary_id(dictionary: Sequence[SignalDef]) -> bytes:
    """8 bytes of SHA-256 over the encoded dictionary: the name a backend caches it under."""
    return hashlib.sha256(cbor2.dumps(dictionary_to_cbor(dictionary))).digest()[:8]


class EncodedSeries(NamedTuple):
    """A series whose columns are already in wire form (the sealing fast path; a named tuple
    because a seal makes one per signal and a frozen dataclass costs 4x more to build)."""

    signal: int
    kind: SeriesKind
    times: bytes
    columns: tuple[bytes, ...]


def encode_series(body: BatchBody) -> list[EncodedSeries]:
    """The reference (pure Python) column encoding of a body's series."""
    return [EncodedSeries(
        item.signal, item.kind, encode_varints([t - body.t0_ms for t in item.times_ms]),
        tuple(_encode_column(column, item.kind.is_float and position < 3)
              for position, column in enumerate(item.columns)))
        for item in body.series]


def encode_body(body: BatchBody,
                encoded: Sequence[EncodedSeries] | SeriesColumns | None = None) -> bytes:
    """The CBOR body. `encoded` replaces `body.series` when the columns are already encoded."""
    if encoded is None:
        encoded = encode_series(body)
    if body.schema == 2:
        flat = encoded if isinstance(encoded, SeriesColumns) else SeriesColumns.of(encoded)
        time_bases = flat.time_bases
        series: list[Any] = flat.sig()
    elif body.schema == 1:
        items = encoded.series() if isinstance(encoded, SeriesColumns) else encoded
        bases: dict[bytes, int] = {}
        series = [[item.signal, bases.setdefault(item.times, len(bases)),
                   int(item.kind), *item.columns] for item in items]
        time_bases = list(bases)
    else:
        raise ValueError(f"cannot write batch schema {body.schema}; "
                         f"known: {', '.join(map(str, SCHEMA_VERSIONS))}")
    document: dict[str, Any] = {
        "v": body.schema,
        "veh": body.vehicle,
        "boot": body.boot,
        "seq": body.seq,
        "t0": body.t0_ms,
        "t1": body.t1_ms,
        "clk": body.clock,
        "cfg": body.config_version,
        "dbc": body.dbc_digest,
        "hlth": dict(body.health),
        "did": body.dictionary_id,
        "tb": time_bases,
        "sig": series,
    }
    if body.dictionary is not None:
        document["dict"] = dictionary_to_cbor(body.dictionary)
    if body.privacy is not None:
        document["prv"] = dict(body.privacy)
    return cbor2.dumps(document)


@dataclass(frozen=True)
class SeriesColumns:
    """Series already in wire form, as schema 2 carries them (§4.6): per series its signal,
    time base (numbered by first use) and kind; each value column's byte length; the value
    columns back to back. The seal builds this directly, as arrays, rather than one
    EncodedSeries per signal that would be taken apart again here.
    """

    signals: np.ndarray
    bases: np.ndarray
    kinds: np.ndarray
    lengths: np.ndarray  # of every value column, series by series (a stats series has 4)
    data: bytes
    time_bases: list[bytes]

    @classmethod
    def of(cls, items: Sequence[EncodedSeries]) -> SeriesColumns:
        time_bases: dict[bytes, int] = {}
        bases = [time_bases.setdefault(item.times, len(time_bases)) for item in items]
        data = list(itertools.chain.from_iterable(item.columns for item in items))
        return cls(signals=np.array([item.signal for item in items], dtype=np.int64),
                   bases=np.array(bases, dtype=np.int64),
                   kinds=np.array([int(item.kind) for item in items], dtype=np.int64),
                   lengths=np.fromiter(map(len, data), dtype=np.int64, count=len(data)),
                   data=b"".join(data), time_bases=list(time_bases))

    def sig(self) -> list[bytes]:
        """Schema 2 `sig`: [signals, time bases, kinds, column lengths, all columns joined].

        Flat columns instead of one small CBOR array per series: the framing zstd could not
        predict (a signal number and four headers per series) becomes three columns of small,
        mostly equal numbers, and the value bytes lie back to back.
        """
        return [*varint_columns((self.signals, self.bases, self.kinds, self.lengths)),
                self.data]

    def series(self) -> list[EncodedSeries]:
        """One EncodedSeries per series (what schema 1 writes)."""
        ends = np.cumsum(self.lengths).tolist()
        columns = [self.data[a:b] for a, b in itertools.pairwise([0, *ends])]
        items = []
        at = 0
        for signal, base, kind in zip(self.signals.tolist(), self.bases.tolist(),
                                      self.kinds.tolist(), strict=True):
            count = _COLUMN_COUNT[kind]
            items.append(EncodedSeries(signal, SeriesKind(kind), self.time_bases[base],
                                       tuple(columns[at:at + count])))
            at += count
        return items


def varint_column(values: Sequence[int]) -> bytes:
    """`encode_varints(values)`, vectorised for long columns."""
    return varint_columns((values,))[0]


def varint_columns(columns: Sequence[Sequence[int] | np.ndarray]) -> list[bytes]:
    """`encode_varints` of each column, in one vectorised pass when they are long."""
    # Below ~1,000 values the numpy path's fixed cost (some 40 array operations) is more than
    # the plain loop's; the four framing columns of a seal (800 signals, 3,200 values) are
    # one pass, a third of four loops.
    sizes = [len(column) for column in columns]
    if sum(sizes) < 1024:
        return [encode_varints(column.tolist() if isinstance(column, np.ndarray) else column)
                for column in columns]
    joined = np.concatenate([np.asarray(column, dtype=np.int64) for column in columns])
    starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64)
    empty = np.array(sizes) == 0  # a group of none has no start of its own: added back after
    encoded = encode_grouped_varints(joined, starts[~empty])
    filled = iter(encoded)
    return [b"" if none else next(filled) for none in empty.tolist()]


def decode_body(data: bytes) -> BatchBody:
    """Decode a body of any schema in SCHEMA_VERSIONS; WireFormatError says what is wrong."""
    try:
        document = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise WireFormatError(f"batch body is not valid CBOR: {exc}") from exc
    if not isinstance(document, dict):
        raise WireFormatError("batch body is not a CBOR map")
    schema = document.get("v")
    if type(schema) is not int or schema not in SCHEMA_VERSIONS:
        raise WireFormatError(f"unsupported batch schema version {shown(schema)}")
    try:
        t0 = time_ms(document["t0"], "t0")
        bases = [tuple(t0 + t for t in decode_varints(byte_string(base, "tb entry")))
                 for base in document["tb"]]
        if schema == 2:
            series = _flat_series(document["sig"], bases)
        else:
            series = tuple(_series(signal, bases, base, SeriesKind(kind_code), columns)
                           for signal, base, kind_code, *columns in document["sig"])
        if len(set(map(attrgetter("signal"), series))) != len(series):
            raise WireFormatError("a signal has more than one series")
        dictionary = document.get("dict")
        dictionary = None if dictionary is None else dictionary_from_cbor(dictionary)
        if dictionary is not None and max(map(attrgetter("signal"), series), default=-1) \
                >= len(dictionary):
            raise WireFormatError(f"a series names a signal beyond the {len(dictionary)} "
                                  "entries of the batch's dictionary")
        return BatchBody(
            schema=schema,
            vehicle=str(document["veh"]),
            boot=byte_string(document["boot"], "boot", 16),
            seq=integer(document["seq"], "seq", 0, UINT64_MAX),
            t0_ms=t0,
            t1_ms=time_ms(document["t1"], "t1"),
            clock=str(document["clk"]),
            config_version=integer(document["cfg"], "cfg", 0, UINT64_MAX),
            dbc_digest=byte_string(document["dbc"], "dbc", 32),
            health={str(k): integer(v, f"hlth {k}") for k, v in document["hlth"].items()},
            dictionary_id=byte_string(document["did"], "did", 8),
            dictionary=dictionary,
            series=series,
            privacy=privacy_field(document.get("prv")),
        )
    except WireFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            struct.error) as exc:
        raise WireFormatError(f"batch body does not follow schema {schema}: "
                              f"{type(exc).__name__}: {exc}") from exc


# Kind codes and what they mean, looked up once per series instead of through the enum: a
# backend decodes hundreds of series per batch (a fleet's minute is 800 one-sample series).
_KINDS = {kind.value: kind for kind in SeriesKind}
_COLUMN_COUNT = {kind.value: 4 if kind.is_stats else 1 for kind in SeriesKind}
# Columns that travel as float64 bytes: a float kind's values, or its min, max and sum.
_FLOAT_COLUMNS = {kind.value: (kind.is_float,) if not kind.is_stats
                  else (kind.is_float,) * 3 + (False,) for kind in SeriesKind}


def _flat_series(columns: Any, bases: Sequence[tuple[int, ...]]) -> tuple[Series, ...]:
    """Schema 2 `sig` (five flat columns, §5.2) → the series, their integer columns decoded in
    one vectorised pass (one by one, exactly, when that pass declines)."""
    if not isinstance(columns, list) or len(columns) != 5 or not all(
            isinstance(column, bytes) for column in columns):
        raise WireFormatError("sig must be an array of 5 byte strings")
    meta = decode_varint_columns(columns[:4]) or [decode_varints(c) for c in columns[:4]]
    signals, base_indexes, kinds, lengths = meta
    data = columns[4]
    if not len(signals) == len(base_indexes) == len(kinds):
        raise WireFormatError(f"sig has {len(signals)} signals, {len(base_indexes)} time bases "
                              f"and {len(kinds)} kinds")
    if len(signals) > MAX_SIGNALS:
        raise WireFormatError(f"sig has {len(signals)} series; signals are numbered "
                              f"0..{MAX_SIGNALS - 1}")
    if signals and not (min(signals) >= 0 and max(signals) < MAX_SIGNALS):
        bad = next(s for s in signals if not 0 <= s < MAX_SIGNALS)
        raise WireFormatError(f"signal index {bad!r} is not in 0..{MAX_SIGNALS - 1}")
    if base_indexes and not (min(base_indexes) >= 0 and max(base_indexes) < len(bases)):
        signal, base = next((s, b) for s, b in zip(signals, base_indexes, strict=True)
                            if not 0 <= b < len(bases))
        raise WireFormatError(f"series of signal {signal} names time base {base!r} of "
                              f"{len(bases)}")
    unknown = set(kinds) - _KINDS.keys()
    if unknown:
        raise WireFormatError(f"sig names series kind {min(unknown)}, not one of "
                              f"{sorted(_KINDS)}")
    if min(lengths, default=0) < 0:
        raise WireFormatError("sig has a negative column length")
    if sum(lengths) != len(data):
        raise WireFormatError(f"sig column lengths add up to {sum(lengths)} bytes, "
                              f"not the {len(data)} given")
    needed = sum(_COLUMN_COUNT[kind] for kind in kinds)
    if needed > len(lengths):
        raise WireFormatError("sig has fewer column lengths than its series need")
    if needed != len(lengths):
        raise WireFormatError(f"sig has {len(lengths) - needed} column lengths left over")
    bounds = list(itertools.accumulate(lengths, initial=0))
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    is_float = [flag for kind in kinds for flag in _FLOAT_COLUMNS[kind]]
    integers = decode_varint_columns([c for c, f in zip(chunks, is_float, strict=True) if not f])
    if integers is None:
        integers = [tuple(decode_varints(c))
                    for c, f in zip(chunks, is_float, strict=True) if not f]
    next_integer = iter(integers).__next__
    decoded = [_float_column(chunk) if flag else next_integer()
               for chunk, flag in zip(chunks, is_float, strict=True)]
    series = []
    append = series.append
    position = 0
    for signal, base, kind in zip(signals, base_indexes, kinds, strict=True):
        times = bases[base]
        if _COLUMN_COUNT[kind] == 1:  # a `last` kind (the usual case, kept short)
            own: tuple[tuple[int | float, ...], ...] = (decoded[position],)
            position += 1
        else:
            own = tuple(decoded[position:position + 4])
            position += 4
        for column in own:
            if len(column) != len(times):
                raise WireFormatError(f"series of signal {signal} has inconsistent columns")
        append(Series(signal, _KINDS[kind], times, own))
    return tuple(series)


def _float_column(data: bytes) -> tuple[float, ...]:
    if len(data) % 8:
        raise WireFormatError("float column length is not a multiple of 8 bytes")
    return struct.unpack(f"<{len(data) // 8}d", data)


def _series(signal: int, bases: Sequence[tuple[int, ...]], base: int, kind: SeriesKind,
            columns: Sequence[bytes]) -> Series:
    if type(signal) is not int or not 0 <= signal < MAX_SIGNALS:
        raise WireFormatError(f"signal index {signal!r} is not in 0..{MAX_SIGNALS - 1}")
    if type(base) is not int or not 0 <= base < len(bases):
        raise WireFormatError(f"series of signal {signal} names time base {base!r} of "
                              f"{len(bases)}")
    times = bases[base]
    decoded = tuple(_decode_column(column, kind.is_float and position < 3)
                    for position, column in enumerate(columns))
    if len(decoded) != (4 if kind.is_stats else 1) or any(
            len(column) != len(times) for column in decoded):
        raise WireFormatError(f"series of signal {signal} has inconsistent columns")
    return Series(int(signal), kind, times, decoded)


def privacy_field(value: Any) -> Mapping[str, Any] | None:
    """`prv` of a batch or an event: the consent level and its version, or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("consent"), str):
        raise WireFormatError("privacy field (prv) must be a map with a consent level")
    return {"consent": value["consent"],
            "ver": integer(value.get("ver", 0), "prv ver", 0, UINT64_MAX)}


def integer(value: Any, name: str, low: int = INT_MIN, high: int = UINT64_MAX) -> int:
    """A CBOR integer field, exactly (not a float, bool or anything int() would convert),
    from `low` to `high`: by default any integer CBOR carries without a bignum tag."""
    if type(value) is not int:
        raise WireFormatError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise WireFormatError(f"{name} must be from {low} to {high}, got {shown(value)}")
    return value


def time_ms(value: Any, name: str) -> int:
    """A window or event time: ms since the Unix epoch, up to the end of the year 9999."""
    if type(value) is int and not 0 <= value <= MAX_TIME_MS:
        raise WireFormatError(f"{name} must be a time from 0 to {MAX_TIME_MS} ms since the "
                              f"Unix epoch (the years 1970 to 9999), got {shown(value)}")
    return integer(value, name)


def number(value: Any, name: str) -> int | float:
    """A scale or offset: an integer CBOR carries without a bignum tag, or a finite float
    (a DBC factor is never NaN or infinite, and cantools' arithmetic assumes neither)."""
    if type(value) is float:
        if not math.isfinite(value):
            raise WireFormatError(f"{name} must be finite, got {value}")
        return value
    if type(value) is not int:
        raise WireFormatError(f"{name} must be a number, got {type(value).__name__}")
    return integer(value, name)


def shown(value: Any, limit: int = 60) -> str:
    """A decoded value as a rejection message shows it: repr, shortened. Never raises: an
    integer of more than 4300 digits (alone or inside a list) has no repr in Python 3.11+."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[:limit] + "..."


def byte_string(value: Any, name: str, size: int | None = None) -> bytes:
    """A CBOR byte string field, of `size` bytes when given (never bytes(n) of a number)."""
    if not isinstance(value, bytes):
        raise WireFormatError(f"{name} must be a byte string, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise WireFormatError(f"{name} must be {size} bytes, got {len(value)}")
    return value


def encode_varints(values: Sequence[int]) -> bytes:
    """Zigzag-encode the difference of each value to the previous one (the first to 0)."""
    out = bytearray()
    append = out.append
    previous = 0
    for value in values:
        delta = value - previous
        previous = value
        zigzag = delta << 1 if delta >= 0 else ((-delta) << 1) - 1
        while zigzag > 0x7F:
            append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        append(zigzag)
    return bytes(out)


_VARINT_LIMITS = np.array([1 << (7 * n) for n in range(1, 10)], dtype=np.uint64)


def encode_grouped_varints(values: np.ndarray, starts: np.ndarray,
                           skip: np.ndarray | None = None) -> list[bytes]:
    """`encode_varints` of each group values[starts[i]:starts[i+1]], vectorised with numpy.

    Exactly the bytes `encode_varints` gives (tests hold the two together). A group whose
    values span 2**61 or more (int64 deltas could overflow) is encoded by `encode_varints`
    alone; the other groups stay vectorised. Groups where `skip` is true come back empty
    (float columns, which travel as doubles: no need to encode them twice).
    """
    values = np.asarray(values, dtype=np.int64)
    bounds = [*starts.tolist(), len(values)]
    if not len(values):
        return [b"" for _ in starts.tolist()]
    # No group spans more than all values do (float() and the subtraction are monotonic):
    # the usual minute needs no per-group reductions.
    if float(values.max()) - float(values.min()) >= 2.0 ** 61:
        wide = (np.maximum.reduceat(values, starts).astype(np.float64)
                - np.minimum.reduceat(values, starts).astype(np.float64)) >= 2.0 ** 61
    else:
        wide = np.zeros(len(starts), dtype=bool)
    if skip is not None:
        wide &= ~skip
    # In-place where numpy allows: every 8-byte temporary of a 48,000-sample minute is 384 KB
    # of fresh pages, and page faults were a large part of a seal (docs/performance.md).
    zigzag = np.empty_like(values)
    zigzag[0] = values[0]
    np.subtract(values[1:], values[:-1], out=zigzag[1:])  # wraps in wide groups: redone below
    zigzag[starts] = values[starts]
    excluded = wide if skip is None else wide | skip
    # Encoded apart or not at all: one byte each here keeps the rest short. A few groups (the
    # float signals of a minute) are cleared by slice rather than through a mask of every value.
    cleared = np.flatnonzero(excluded).tolist()
    if len(cleared) <= 64:
        for group in cleared:
            zigzag[bounds[group]:bounds[group + 1]] = 0
    else:
        zigzag[np.repeat(excluded, np.diff(bounds))] = 0
    sign = zigzag >> 63
    np.left_shift(zigzag, 1, out=zigzag)
    np.bitwise_xor(zigzag, sign, out=zigzag)
    zigzag = zigzag.view(np.uint64)
    # Every value has a first byte, its low 7 bits; most take no more (99 % of the bench
    # minute's deltas), so lengths and further bytes are worked out for the longer ones only.
    low = zigzag.astype(np.uint8)  # the low 8 bits
    np.bitwise_and(low, np.uint8(0x7F), out=low)
    longer = np.flatnonzero(zigzag > np.uint64(0x7F))
    if not len(longer):
        out, byte_starts = low, starts
    else:
        tail = zigzag[longer]
        tail_lengths = np.full(len(tail), 2, dtype=np.uint8)
        for limit in _VARINT_LIMITS[1:(int(tail.max()).bit_length() - 1) // 7]:
            tail_lengths += tail >= limit
        low[longer] |= np.uint8(0x80)
        lengths = np.ones(len(zigzag), dtype=np.uint8)
        lengths[longer] = tail_lengths
        # Widened first, then summed in place: np.cumsum(lengths, dtype=np.int64) casts
        # through a buffered loop ten times slower (0.6 ms of a 48,000-value column).
        offsets = lengths.astype(np.int64)
        np.cumsum(offsets, out=offsets)
        out = np.empty(int(offsets[-1]), dtype=np.uint8)
        offsets -= lengths
        out[offsets] = low
        at = offsets[longer]
        for position in range(1, int(tail_lengths.max())):
            chunk = ((tail >> np.uint64(7 * position)) & np.uint64(0x7F)).astype(np.uint8)
            more = tail_lengths > position + 1
            chunk[more] |= np.uint8(0x80)
            out[at + position] = chunk
            at, tail, tail_lengths = at[more], tail[more], tail_lengths[more]
        byte_starts = offsets[starts]
    data = out.tobytes()
    byte_bounds = [*byte_starts.tolist(), len(data)]
    columns = [data[a:b] for a, b in itertools.pairwise(byte_bounds)]
    for group in np.flatnonzero(wide).tolist():
        columns[group] = encode_varints(values[bounds[group]:bounds[group + 1]].tolist())
    if skip is not None:
        for group in np.flatnonzero(skip).tolist():
            columns[group] = b""
    return columns


def decode_varints(data: bytes) -> list[int]:
    values = []
    previous = 0
    zigzag = 0
    shift = 0
    for byte in data:
        zigzag |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:  # 10 bytes hold any 66-bit zigzag delta (§5.1); longer is hostile
                raise WireFormatError("varint longer than 10 bytes")
            continue
        previous += (zigzag >> 1) if not zigzag & 1 else -((zigzag + 1) >> 1)
        values.append(previous)
        zigzag = 0
        shift = 0
    if shift:
        raise WireFormatError("varint column ends in the middle of a number")
    return values


def _encode_column(column: Sequence[int | float], is_float: bool) -> bytes:
    if is_float:
        return struct.pack(f"<{len(column)}d", *column)
    return encode_varints([int(v) for v in column])


def decode_varint_columns(columns: Sequence[bytes]) -> list[tuple[int, ...]] | None:
    """`decode_varints` of many columns at once, vectorised (a backend decodes every column of
    a batch this way). None when a column needs the exact path: a varint longer than 9 bytes,
    values that could leave int64, or a malformed column (whose error `decode_varints` names).
    """
    if not columns:
        return []
    lengths = np.fromiter(map(len, columns), dtype=np.int64, count=len(columns))
    data = np.frombuffer(b"".join(columns), dtype=np.uint8)
    if not len(data):
        return [()] * len(columns)
    column_ends = np.cumsum(lengths)
    if (data[column_ends[lengths > 0] - 1] & 0x80).any():
        return None  # a column ends inside a varint
    ends = np.flatnonzero(data < 0x80)
    starts = np.concatenate(([0], ends[:-1] + 1))
    sizes = ends - starts + 1
    if int(sizes.max()) > 9:
        return None
    within = np.arange(len(data)) - np.repeat(starts, sizes)
    parts = (data & 0x7F).astype(np.uint64) << (within * 7).astype(np.uint64)
    zigzag = np.add.reduceat(parts, starts)
    deltas = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(
        np.int64)
    if int(np.abs(deltas).max()) * len(deltas) >= 1 << 62:
        return None  # a running sum might leave int64: the exact path
    running = np.concatenate(([0], np.cumsum(deltas)))
    bounds = np.concatenate(([0], np.searchsorted(ends, column_ends)))
    counts = np.diff(bounds)
    values = (running[1:] - np.repeat(running[bounds[:-1]], counts)).tolist()
    cuts = bounds.tolist()
    return [tuple(values[a:b]) for a, b in itertools.pairwise(cuts)]


def _decode_column(data: bytes | tuple[int, ...], is_float: bool) -> tuple[int | float, ...]:
    if isinstance(data, tuple):  # already decoded with its batch (decode_varint_columns)
        return data
    return _float_column(data) if is_float else tuple(decode_varints(data))


def dictionary_to_cbor(dictionary: Sequence[SignalDef]) -> list[list[Any]]:
    return [[d.key, d.unit, d.scale, d.offset, _value_type(d), d.mode,
             dict(d.choices) if d.choices else None] for d in dictionary]


def _value_type(definition: SignalDef) -> str:
    if definition.is_float:
        return "f"
    return "u" if definition.is_unsigned64 else "i"


def dictionary_from_cbor(entries: Sequence[Sequence[Any]]) -> tuple[SignalDef, ...]:
    return tuple(
        SignalDef(key=str(key), unit=str(unit), scale=number(scale, f"scale of {shown(key)}"),
                  offset=number(offset, f"offset of {shown(key)}"),
                  is_float=kind == "f", mode=str(mode),
                  choices={integer(k, f"value label of {shown(key)}"): str(v)
                           for k, v in choices.items()} if choices else None,
                  is_unsigned64=kind == "u")
        for key, unit, scale, offset, kind, mode, choices in entries
    )
