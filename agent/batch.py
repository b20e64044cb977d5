"""Sealing a window: ring records → columnar body → zstd → COSE_Sign1, and the reverse."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.cose import Signer, verify
from agent.errors import WireFormatError
from agent.plan import SamplingPlan
from agent.ring import Field, Record, Ring
from agent.wire import (
    BatchBody,
    Series,
    SeriesKind,
    SignalDef,
    decode_body,
    dictionary_id,
    encode_body,
)

CONTENT_TYPE = "application/vnd.edge-agent.batch+cbor+zstd"
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SealedBatch:
    """A signed batch ready for the uplink (and, later, the spool)."""

    seq: int
    t0_ms: int
    t1_ms: int
    samples: int
    envelope: bytes


@dataclass(frozen=True)
class BatchIdentity:
    vehicle: str
    boot: bytes
    config_version: int
    dbc_digest: bytes
    clock: Callable[[], str]


def signal_dictionary(plan: SamplingPlan) -> tuple[SignalDef, ...]:
    return tuple(SignalDef(key=s.key, unit=s.unit, scale=s.scale, offset=s.offset,
                           is_float=s.is_float, mode=s.mode, choices=s.choices)
                 for s in plan.signals)


class Batcher:
    """Turns each window of ring records into a SealedBatch with the next sequence number."""

    def __init__(self, plan: SamplingPlan, ring: Ring, identity: BatchIdentity, signer: Signer,
                 health: Callable[[], Mapping[str, int]], *, zstd_level: int = 3,
                 dictionary_every: int = 60) -> None:
        self._ring = ring
        self._identity = identity
        self._signer = signer
        self._health = health
        self._compressor = zstandard.ZstdCompressor(level=zstd_level)
        self._dictionary_every = max(1, dictionary_every)
        self._dictionary = signal_dictionary(plan)
        self._dictionary_id = dictionary_id(self._dictionary)
        self._kinds = {s.index: _kind(s.is_float, s.mode) for s in plan.signals}
        self._cursor = ring.written
        self._lock = threading.Lock()
        self.next_seq = 0
        self.ring_lost = 0

    @property
    def dictionary(self) -> tuple[SignalDef, ...]:
        return self._dictionary

    @property
    def cursor(self) -> int:
        return self._cursor

    def clock(self) -> str:
        return self._identity.clock()

    def seal(self, t0_ms: int, t1_ms: int) -> SealedBatch:
        with self._lock:
            lost = self._ring.lost_since(self._cursor)
            self.ring_lost += lost
            end = self._ring.written
            records = self._ring.read(self._cursor, end)
            self._cursor = end
            seq = self.next_seq
            self.next_seq += 1
        health = {**self._health(), "ring.lost": self.ring_lost}
        include_dictionary = seq % self._dictionary_every == 0
        body = BatchBody(
            vehicle=self._identity.vehicle,
            boot=self._identity.boot,
            seq=seq,
            t0_ms=t0_ms,
            t1_ms=t1_ms,
            clock=self._identity.clock(),
            config_version=self._identity.config_version,
            dbc_digest=self._identity.dbc_digest,
            health=health,
            dictionary_id=self._dictionary_id,
            dictionary=self._dictionary if include_dictionary else None,
            series=_series(records, self._kinds),
        )
        payload = self._compressor.compress(encode_body(body))
        return SealedBatch(seq=seq, t0_ms=t0_ms, t1_ms=t1_ms, samples=body.sample_count,
                           envelope=self._signer.sign(payload))


def open_batch(envelope: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> BatchBody:
    """Verify, decompress and decode a batch; WireFormatError says which step failed."""
    verified = verify(envelope, keys)
    if verified.content_type != CONTENT_TYPE:
        raise WireFormatError(f"unexpected content type {verified.content_type!r}")
    try:
        body = zstandard.ZstdDecompressor().decompress(verified.payload,
                                                       max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as exc:
        raise WireFormatError(f"payload is not valid zstd: {exc}") from exc
    return decode_body(body)


def _kind(is_float: bool, mode: str) -> SeriesKind:
    if mode == "stats":
        return SeriesKind.FLOAT_STATS if is_float else SeriesKind.INT_STATS
    return SeriesKind.FLOAT_LAST if is_float else SeriesKind.INT_LAST


def _series(records: Sequence[Record], kinds: Mapping[int, SeriesKind]) -> tuple[Series, ...]:
    times: dict[int, list[int]] = {}
    columns: dict[int, list[list[int | float]]] = {}
    for record in records:
        kind = kinds.get(record.signal)
        if kind is None:
            continue
        if not kind.is_stats:
            times.setdefault(record.signal, []).append(record.time_ms)
            columns.setdefault(record.signal, [[]])[0].append(record.value)
            continue
        stats = columns.setdefault(record.signal, [[], [], [], []])
        if record.field is Field.MIN:
            times.setdefault(record.signal, []).append(record.time_ms)
        elif len(stats[record.field - 1]) >= len(times.get(record.signal, ())):
            continue  # the rest of a group whose MIN the ring overwrote: incomplete, skip
        stats[record.field - 1].append(record.value)
    return tuple(
        Series(signal=signal, kind=kinds[signal], times_ms=tuple(times[signal]),
               columns=tuple(tuple(column) for column in columns[signal]))
        for signal in sorted(times)
    )
