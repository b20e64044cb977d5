"""Random ring contents → `Batcher.seal` → the body a plain reference encoder writes, and back.

Two independent readings of docs/wire-format.md hold the fast, vectorised seal to account:

- `reference_body` below writes a batch body with plain loops straight from the document
  (§4 body, §4.5 time bases, §4.6/§4.7 series, §5 columns); the sealed body must be the same
  bytes. Bodies are compared after verifying and decompressing the envelope: the CBOR body is
  where the output is deterministic (zstd's bytes may differ between library versions).
- the decoder of tests/unit/wire/test_wire_spec.py, also written from the document alone, must give
  back exactly the samples that went into the ring, floats bit for bit.

The ring contents are what a car gives: many signals on a few shared ticks, messages that go
quiet and come back (equal counts, different times), stats groups, floats including NaN,
±inf and -0.0, integers across the whole int64 range, records of signals outside the plan,
and a ring that overwrote its oldest records, stats groups included, before the seal.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from tests.unit.wire.test_wire_spec import (
    FLOAT_COLUMNS,
    decode_body,
    decompress,
    kid_of,
    open_envelope,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEYS = {kid_of(KEY.public_key()): KEY.public_key()}
WINDOW_MS = 60_000
HEALTH = {"can0.frames": 42}

# (mode, is_float) of each series kind, numbered as in §4.6.
INT_LAST, FLOAT_LAST, INT_STATS, FLOAT_STATS = 0, 1, 2, 3
KIND_SHAPES = {INT_LAST: ("last", False), FLOAT_LAST: ("last", True),
               INT_STATS: ("stats", False), FLOAT_STATS: ("stats", True)}
STATS_FIELDS = (Field.MIN, Field.MAX, Field.SUM, Field.COUNT)

Record = tuple[int, int, Field, int | float]  # time ms, signal, field, value: what the ring holds


# --- the reference encoder: docs/wire-format.md, written out with plain loops -----------------

def varint_column(values: list[int]) -> bytes:
    """§5.1: zigzag deltas (the first from 0), each as LEB128."""
    out = bytearray()
    previous = 0
    for value in values:
        delta = value - previous
        previous = value
        zigzag = 2 * delta if delta >= 0 else -2 * delta - 1
        while zigzag > 0x7F:
            out.append((zigzag & 0x7F) | 0x80)
            zigzag >>= 7
        out.append(zigzag)
    return bytes(out)


def float_column(values: list[float]) -> bytes:
    """§5.2: little-endian binary64, no delta."""
    return b"".join(struct.pack("<d", value) for value in values)


def reference_series(records: list[Record], kinds: dict[int, int],
                     t0_ms: int) -> list[tuple[int, int, bytes, list[bytes]]]:
    """(signal, kind, time column, value columns) per series, in the agent's order (§4.6)."""
    by_signal: dict[int, list[Record]] = {}
    for record in records:
        if record[1] in kinds:  # records of signals outside the plan are not sent
            by_signal.setdefault(record[1], []).append(record)
    last, stats = [], []
    for signal in sorted(by_signal):
        kind, mine = kinds[signal], by_signal[signal]
        if kind in (INT_LAST, FLOAT_LAST):
            values = [value for _, _, _, value in mine]
            column = float_column(values) if kind == FLOAT_LAST else varint_column(values)
            last.append((signal, kind, varint_column([t - t0_ms for t, *_ in mine]), [column]))
            continue
        # A stats sample is the four records MIN, MAX, SUM, COUNT; a group the ring overwrote
        # in part is not a sample.
        groups = [mine[at:at + 4] for at in range(len(mine) - 3)
                  if tuple(field for _, _, field, _ in mine[at:at + 4]) == STATS_FIELDS]
        if not groups:
            continue
        columns = []
        for position in range(4):
            values = [group[position][3] for group in groups]
            columns.append(float_column(values) if kind == FLOAT_STATS and position < 3
                           else varint_column(values))
        stats.append((signal, kind, varint_column([group[0][0] - t0_ms for group in groups]),
                      columns))

    def quiet_first(series: tuple[int, int, bytes, list[bytes]]) -> tuple[float, int]:
        # §4.6 leaves the order to the agent; this is its choice (agent.output.batch._quiet_first):
        # int `last` series by their share of non-zero bytes, float ones after them.
        signal, kind, _, (column,) = series
        if kind == FLOAT_LAST:
            return 2.0, signal
        return sum(byte != 0 for byte in column) / len(column), signal

    return sorted(last, key=quiet_first) + stats


def reference_body(plan: SamplingPlan, records: list[Record], *, schema: int, t0_ms: int,
                   lost: int) -> bytes:
    """The body of the first batch of a boot (so it carries the dictionary), §4."""
    kinds = {s.index: _kind(s) for s in plan.signals}
    series = reference_series(records, kinds, t0_ms)
    time_bases: list[bytes] = []  # §4.5: byte-identical columns share one entry, by first use
    bases = []
    for _, _, times, _ in series:
        if times not in time_bases:
            time_bases.append(times)
        bases.append(time_bases.index(times))
    if schema == 2:
        columns = [column for *_, item_columns in series for column in item_columns]
        sig: list[Any] = [varint_column([signal for signal, *_ in series]),
                          varint_column(bases),
                          varint_column([kind for _, kind, *_ in series]),
                          varint_column([len(column) for column in columns]),
                          b"".join(columns)]
    else:
        sig = [[signal, base, kind, *columns]
               for (signal, kind, _, columns), base in zip(series, bases, strict=True)]
    dictionary = [[s.key, s.unit, s.scale, s.offset, "f" if s.is_float else "i", s.mode, None]
                  for s in plan.signals]
    return cbor2.dumps({
        "v": schema, "veh": "demo-0001", "boot": bytes(range(16)), "seq": 0,
        "t0": t0_ms, "t1": t0_ms + WINDOW_MS, "clk": "ntp", "cfg": 1, "dbc": bytes(32),
        "hlth": {**HEALTH, "ring.lost": lost},
        "did": hashlib.sha256(cbor2.dumps(dictionary)).digest()[:8],
        "tb": time_bases, "sig": sig, "dict": dictionary,
    })


def _kind(signal: PlannedSignal) -> int:
    return next(kind for kind, shape in KIND_SHAPES.items()
                if shape == (signal.mode, signal.is_float))


# --- random ring contents ---------------------------------------------------------------------

INT64 = st.one_of(st.integers(-1000, 1000), st.integers(-2 ** 63, 2 ** 63 - 1))
FLOAT64 = st.one_of(
    st.floats(),  # includes NaN, ±inf, -0.0 and subnormals
    st.integers(0, 2 ** 64 - 1).map(  # any bit pattern: NaN payloads, signalling NaNs
        lambda bits: struct.unpack("<d", bits.to_bytes(8, "little"))[0]),
)


def values_of(kind: int) -> st.SearchStrategy[tuple[int | float, ...]]:
    if kind in (INT_LAST, FLOAT_LAST):
        return st.tuples(FLOAT64 if kind == FLOAT_LAST else INT64)
    number = FLOAT64 if kind == FLOAT_STATS else INT64
    return st.tuples(number, number, number, st.integers(1, 2 ** 63 - 1))


@st.composite
def ring_contents(draw: st.DrawFn) -> dict[str, Any]:
    """A plan, each signal's samples, and the order their records reached the ring."""
    t0_ms = draw(st.integers(0, 2 ** 42))
    # Sizes drawn first: hypothesis keeps free-sized lists short, and the cases that matter
    # need many signals on several ticks.
    tick_count, pattern_count, signal_count = (draw(st.integers(1, 10)), draw(st.integers(2, 5)),
                                               draw(st.integers(1, 40)))
    ticks = sorted(draw(st.sets(st.one_of(st.integers(-3000, 2 * WINDOW_MS),
                                          st.integers(-2 ** 40, 2 ** 40)),
                                min_size=tick_count, max_size=tick_count)))
    # Signals share a few patterns of ticks, as the signals of one message do, each pattern
    # at its own phase: a run of one common length (a message that went quiet, or came back:
    # equal counts, different times) or any ticks (runs that stop and restart). With the old
    # time-column bug about a third of the examples came back with some signal's times wrong.
    run = draw(st.integers(1, tick_count))
    phases = draw(st.lists(st.integers(0, 999), unique=True, min_size=pattern_count,
                           max_size=pattern_count))
    patterns = [[ticks[at] + phase for at in draw(st.one_of(
        st.integers(0, tick_count - run).map(lambda start: range(start, start + run)),
        st.sets(st.integers(0, tick_count - 1)).map(sorted)))] for phase in phases]
    kinds = draw(st.lists(st.sampled_from(list(KIND_SHAPES)), min_size=signal_count,
                          max_size=signal_count))
    outside = draw(st.lists(st.integers(len(kinds), 65535), unique=True, max_size=3))
    samples: dict[int, list[tuple[int, tuple[int | float, ...]]]] = {}
    for signal, kind in [*enumerate(kinds), *((signal, INT_LAST) for signal in outside)]:
        samples[signal] = [(t0_ms + tick, draw(values_of(kind)))
                           for tick in draw(st.sampled_from(patterns))]
    # Signals interleave freely in the ring; each signal's own samples stay in order.
    order = draw(st.permutations([signal for signal, mine in samples.items() for _ in mine]))
    return {"t0_ms": t0_ms, "kinds": kinds, "samples": samples, "order": order,
            "schema": draw(st.sampled_from([1, 2])),
            "overwritten": draw(st.one_of(st.just(0), st.integers(0, 4 * len(order))))}


@st.composite
def periodic_ring_contents(draw: st.DrawFn) -> dict[str, Any]:
    """The usual window (the seal's fast path): every tick, the same signals in the same
    order; ticks at each signal's own phase, mostly `last` signals, some outside the plan."""
    t0_ms, tick_count = draw(st.integers(0, 2 ** 42)), draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from([INT_LAST, INT_LAST, FLOAT_LAST, INT_STATS]),
                          min_size=1, max_size=40))
    outside = draw(st.lists(st.integers(len(kinds), 65535), unique=True, max_size=3))
    kind_of = {**dict(enumerate(kinds)), **dict.fromkeys(outside, INT_LAST)}
    shared = draw(st.booleans())  # one time column for all, or each signal its own phase
    samples = {signal: [(t0_ms + tick * 1000 + (0 if shared else draw(st.integers(0, 999))),
                         draw(values_of(kind))) for tick in range(tick_count)]
               for signal, kind in kind_of.items()}
    row = draw(st.permutations(list(samples)))
    return {"t0_ms": t0_ms, "kinds": kinds, "samples": samples, "order": row * tick_count,
            "schema": draw(st.sampled_from([1, 2])), "overwritten": draw(st.sampled_from(
                [0, 0, 0, len(row), draw(st.integers(0, len(row) * tick_count))]))}


def make_plan(kinds: list[int]) -> SamplingPlan:
    return SamplingPlan(signals=tuple(
        PlannedSignal(index=index, key=f"can0.M{index}.S", source="can0", frame_id=index,
                      message=f"M{index}", signal="S", period_ms=1000,
                      mode=KIND_SHAPES[kind][0], is_float=KIND_SHAPES[kind][1], scale=1,
                      offset=0, unit="", choices=None)
        for index, kind in enumerate(kinds)), stale_after_ms=10_000)


def records_in_ring_order(contents: dict[str, Any]) -> list[tuple[Record, tuple[int, int]]]:
    """Every record the sampler would append, each with its sample: (signal, n-th sample)."""
    taken = dict.fromkeys(contents["samples"], 0)
    kinds = contents["kinds"]
    records: list[tuple[Record, tuple[int, int]]] = []
    for signal in contents["order"]:
        sample = (signal, taken[signal])
        taken[signal] += 1
        time_ms, values = contents["samples"][signal][sample[1]]
        stats = signal < len(kinds) and kinds[signal] in (INT_STATS, FLOAT_STATS)
        fields = STATS_FIELDS if stats else (Field.VALUE,)
        records.extend(((time_ms, signal, field, value), sample)
                       for field, value in zip(fields, values, strict=True))
    return records


def surviving_samples(contents: dict[str, Any],
                      kept: list[tuple[Record, tuple[int, int]]]) -> dict[int, dict[str, Any]]:
    """Per signal of the plan, the samples whose records all survived in the ring (a stats
    group's records are adjacent: if its MIN survived, so did the rest)."""
    kinds = contents["kinds"]
    expected: dict[int, dict[str, Any]] = {}
    for (_, _, field, _), (signal, number) in kept:
        if field in (Field.VALUE, Field.MIN) and signal < len(kinds):
            time_ms, values = contents["samples"][signal][number]
            series = expected.setdefault(signal, {"kind": kinds[signal], "times": [],
                                                  "rows": []})
            series["times"].append(time_ms)
            series["rows"].append(values)
    return expected


def comparable(kind: int, columns: list[list[int | float]]) -> list[list[int | bytes]]:
    """Columns with floats as their bit patterns: NaN payloads and -0.0 compare exactly."""
    return [[struct.pack("<d", value) for value in column] if position in FLOAT_COLUMNS[kind]
            else list(column) for position, column in enumerate(columns)]


# --- the property -----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(ring_contents(), periodic_ring_contents()))
def test_seal_writes_the_reference_bytes_and_decodes_to_what_went_in(contents):
    t0_ms, kinds, schema = contents["t0_ms"], contents["kinds"], contents["schema"]
    plan = make_plan(kinds)
    appended = records_in_ring_order(contents)
    # A ring that is `overwritten` records too small for the window (at least one record).
    capacity = max(1, len(appended) - contents["overwritten"])
    ring = Ring(capacity, frozenset(s.index for s in plan.signals if s.is_float))
    identity = BatchIdentity(vehicle="demo-0001", boot=bytes(range(16)), config_version=1,
                             dbc_digest=bytes(32), clock=lambda: "ntp")
    batcher = Batcher(plan, ring, identity, Signer(KEY, CONTENT_TYPE), lambda: HEALTH,
                      schema=schema)
    for record, _ in appended:
        ring.append(*record)
    sealed = batcher.seal(t0_ms, t0_ms + WINDOW_MS)

    kept = appended[max(0, len(appended) - capacity):]
    lost = len(appended) - len(kept)
    body = decompress(open_envelope(sealed.envelope, KEYS)[1])
    batch = decode_body(body)
    expected = surviving_samples(contents, kept)
    assert (batch["v"], batch["t0"], batch["hlth"]["ring.lost"]) == (schema, t0_ms, lost)
    assert set(batch["series"]) == set(expected)
    for signal, want in expected.items():
        got = batch["series"][signal]
        assert (got["kind"], got["times"]) == (want["kind"], want["times"]), signal
        columns = [list(column) for column in zip(*want["rows"], strict=True)]
        assert comparable(got["kind"], got["columns"]) == comparable(want["kind"], columns), \
            signal
    assert sealed.samples == sum(len(want["times"]) for want in expected.values())
    assert body == reference_body(plan, [record for record, _ in kept], schema=schema,
                                  t0_ms=t0_ms, lost=lost)
