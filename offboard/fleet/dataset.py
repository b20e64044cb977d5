"""The backend's Parquet data set: samples, events and batches, column by column.

Three tables under one root, each partitioned hive style by the UTC date of the batch's window
start (an event's own time) and the vehicle (as the backend reports it: its id, or its
pseudonym without the secret), so that DuckDB, Spark, Trino or ClickHouse read
`ROOT/samples/**/*.parquet` with `date` and `vehicle` as columns:

    ROOT/{samples,events,batches}/date=YYYY-MM-DD/vehicle=V/part-{worker}-{n}.parquet

The sample table is built from a batch's decoded series with numpy (one array operation per
column and batch, none per sample). A worker keeps what it decoded in memory and writes one file
per partition and table at every flush (`--flush` seconds, and at exit): to a temp file in the
partition's folder, then renamed, so a reader never sees half a file. Worker names must differ
between the workers that share a root. docs/backend.md documents the schema.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agent.events.codec import EventBody
from agent.wire.body import BatchBody, SeriesKind, SignalDef

TIME = pa.timestamp("ms", tz="UTC")
SAMPLES = pa.schema([
    ("boot", pa.dictionary(pa.int32(), pa.string())), ("seq", pa.int64()), ("time", TIME),
    ("signal", pa.dictionary(pa.int32(), pa.string())), ("unit", pa.dictionary(pa.int32(),
                                                                                pa.string())),
    ("raw", pa.int64()), ("value", pa.float64()), ("label", pa.dictionary(pa.int32(), pa.string())),
    ("min", pa.float64()), ("max", pa.float64()), ("mean", pa.float64()),
    ("count", pa.int64()),
])
EVENTS = pa.schema([
    ("boot", pa.string()), ("seq", pa.int64()), ("time", TIME), ("event", pa.string()),
    ("data", pa.string()), ("positions", pa.string()),
])
BATCHES = pa.schema([
    ("boot", pa.string()), ("seq", pa.int64()), ("t0", TIME), ("t1", TIME),
    ("clock", pa.string()), ("config_version", pa.int64()), ("dictionary_id", pa.string()),
    ("samples", pa.int64()), ("health", pa.string()), ("worker", pa.string()),
])
TABLES = {"samples": SAMPLES, "events": EVENTS, "batches": BATCHES}
TWO_64 = float(1 << 64)
SIGNAL, KIND, TIMES = attrgetter("signal"), attrgetter("kind"), attrgetter("times_ms")
FLOAT_KINDS = [kind.value for kind in SeriesKind if kind.is_float]
STATS_KINDS = [kind.value for kind in SeriesKind if kind.is_stats]


@dataclass(frozen=True)
class DictionaryColumns:
    """A dictionary's per-signal numbers and names as arrays, prepared once per dictionary
    (a batch of 800 one-sample series then costs a few numpy gathers, not 800 lookups)."""

    scale: np.ndarray
    offset: np.ndarray
    unsigned: np.ndarray
    keys: pa.Array
    units: pa.Array


_COLUMNS: dict[int, tuple[Sequence[SignalDef], DictionaryColumns]] = {}


def dictionary_columns(dictionary: Sequence[SignalDef]) -> DictionaryColumns:
    """The DictionaryColumns of `dictionary`, kept while the same object is in use (as
    label_index keeps its LabelIndex)."""
    cached = _COLUMNS.get(id(dictionary))
    if cached is not None and cached[0] is dictionary:
        return cached[1]
    columns = DictionaryColumns(
        np.array([float(d.scale) for d in dictionary], dtype=np.float64),
        np.array([float(d.offset) for d in dictionary], dtype=np.float64),
        np.array([d.is_unsigned64 for d in dictionary], dtype=bool),
        pa.array([d.key for d in dictionary], pa.string()),
        pa.array([d.unit for d in dictionary], pa.string()))
    if len(_COLUMNS) >= 64:
        _COLUMNS.clear()
    _COLUMNS[id(dictionary)] = (dictionary, columns)
    return columns


def sample_table(body: BatchBody, dictionary: Sequence[SignalDef]) -> pa.Table:
    """The batch's samples as one table (schema SAMPLES), built column-wise: each column is
    read out of the decoded series in one pass (itertools.chain in C), the physical values
    are numpy arithmetic over whole columns."""
    series = body.series
    # attrgetter over the series: iteration in C (a batch may hold 800 one-sample series).
    lengths = np.fromiter(map(len, map(TIMES, series)), dtype=np.int64,
                          count=len(series))
    count = int(lengths.sum())
    signals = np.fromiter(map(SIGNAL, series), dtype=np.int32, count=len(series))
    kind_codes = np.fromiter(map(KIND, series), dtype=np.int8, count=len(series))
    float_series = np.isin(kind_codes, FLOAT_KINDS)
    stats_series = np.isin(kind_codes, STATS_KINDS)
    is_stats = np.repeat(stats_series, lengths)
    is_float = np.repeat(float_series, lengths)
    known = dictionary_columns(dictionary)
    scale = np.repeat(known.scale[signals], lengths)
    offset = np.repeat(known.offset[signals], lengths)
    unsigned = np.repeat(known.unsigned[signals], lengths)
    times = np.fromiter(chain.from_iterable(map(TIMES, series)), dtype=np.int64,
                        count=count)

    def gather(position: int, selected: Sequence[int], dtype: type, mask: np.ndarray
               ) -> np.ndarray:
        """Column `position` of the series `selected`, placed at their samples (`mask`)."""
        out = np.zeros(count, dtype=dtype)
        out[mask] = np.fromiter(chain.from_iterable(series[i].columns[position]
                                                    for i in selected),
                                dtype=dtype, count=int(mask.sum()))
        return out

    ints = np.flatnonzero(~float_series).tolist()
    floats = np.flatnonzero(float_series).tolist()
    stats = np.flatnonzero(stats_series).tolist()
    raw = gather(0, ints, np.int64, ~is_float)
    first = np.where(is_float, gather(0, floats, np.float64, is_float), raw)

    def physical(values: np.ndarray) -> np.ndarray:
        values = np.where(unsigned & (values < 0), values + TWO_64, values)
        return values * scale + offset

    value = physical(first)
    last = ~is_stats
    if stats:
        stats_ints = np.flatnonzero(stats_series & ~float_series).tolist()
        stats_floats = np.flatnonzero(stats_series & float_series).tolist()
        int_stats, float_stats = is_stats & ~is_float, is_stats & is_float

        def stats_column(position: int) -> np.ndarray:
            return np.where(is_float, gather(position, stats_floats, np.float64, float_stats),
                            gather(position, stats_ints, np.int64, int_stats))

        high = physical(stats_column(1))
        counts = gather(3, stats, np.int64, is_stats)
        mean = physical(stats_column(2) / np.where(counts > 0, counts, 1))
        low, high = np.minimum(value, high), np.maximum(value, high)  # scale < 0 swaps them
    else:
        low = high = mean = np.zeros(count)
        counts = np.zeros(count, dtype=np.int64)
    keys, units = known.keys, known.units
    indices = pa.array(np.repeat(signals, lengths))
    return pa.Table.from_arrays([
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(count, dtype=np.int32)),
                                       pa.array([body.boot.hex()], pa.string())),
        pa.array(np.full(count, body.seq, dtype=np.int64)),
        pa.array(times, TIME),
        pa.DictionaryArray.from_arrays(indices, keys),
        pa.DictionaryArray.from_arrays(indices, units),
        pa.array(raw, mask=is_stats | is_float),
        pa.array(value, mask=is_stats),
        _labels(series, dictionary, raw, lengths),
        pa.array(low, mask=last), pa.array(high, mask=last), pa.array(mean, mask=last),
        pa.array(counts, mask=last),
    ], schema=SAMPLES)


@dataclass(frozen=True)
class LabelIndex:
    """A dictionary's value tables, prepared once: every (signal, raw value) that has a label
    as one sorted int64 key `signal << 32 | (raw + 2**31)` (raw values within 32 bits, which
    is every DBC value table in practice), and the position of its label in `names`; labels of
    raw values beyond 32 bits per signal apart (`wide`)."""

    keys: np.ndarray
    codes: np.ndarray
    labelled: np.ndarray  # by signal number: has a value table
    wide: dict[int, dict[int, int]]
    names: pa.Array


_INDEXES: dict[int, tuple[Sequence[SignalDef], LabelIndex]] = {}
INT32 = 1 << 31


def label_index(dictionary: Sequence[SignalDef]) -> LabelIndex:
    """The LabelIndex of `dictionary`, kept while the same dictionary object is in use (the
    backend's store hands out one object per dictionary id)."""
    cached = _INDEXES.get(id(dictionary))
    if cached is not None and cached[0] is dictionary:
        return cached[1]
    keys: list[int] = []
    codes: list[int] = []
    wide: dict[int, dict[int, int]] = {}
    names: list[str] = []
    labelled = np.zeros(max(len(dictionary), 1), dtype=bool)
    for signal, definition in enumerate(dictionary):
        for raw, name in sorted((definition.choices or {}).items()):
            if not -(1 << 63) <= raw < (1 << 63):
                continue
            labelled[signal] = True
            if -INT32 <= raw < INT32:
                keys.append(signal << 32 | (raw + INT32))
                codes.append(len(names))
            else:
                wide.setdefault(signal, {})[raw] = len(names)
            names.append(name)
    order = np.argsort(np.array(keys, dtype=np.int64), kind="stable")
    index = LabelIndex(np.array(keys, dtype=np.int64)[order],
                       np.array(codes, dtype=np.int32)[order], labelled, wide,
                       pa.array(names, pa.string()))
    if len(_INDEXES) >= 64:
        _INDEXES.clear()
    _INDEXES[id(dictionary)] = (dictionary, index)
    return index


def _labels(series: Sequence, dictionary: Sequence[SignalDef], raw: np.ndarray,
            lengths: np.ndarray) -> pa.Array:
    """Value labels (DBC `VAL_`) of integer `last` samples whose raw value has one, null
    otherwise: one `searchsorted` of every candidate sample's (signal, raw) key into the
    dictionary's sorted keys, whatever the number of series (a batch of 800 one-sample
    series costs what one series of 800 samples does)."""
    index = label_index(dictionary)
    count = len(raw)
    if not len(index.names):
        return pa.nulls(count, pa.string())
    signals = np.fromiter(map(SIGNAL, series), dtype=np.int64, count=len(series))
    int_last = np.fromiter(map(KIND, series), dtype=np.int8,
                           count=len(series)) == SeriesKind.INT_LAST
    per_sample = np.repeat(signals, lengths)
    candidate = np.repeat(int_last & index.labelled[signals], lengths)
    codes = np.full(count, -1, dtype=np.int32)
    narrow = candidate & (raw >= -INT32) & (raw < INT32)
    if narrow.any() and len(index.keys):
        wanted = per_sample[narrow] << 32 | (raw[narrow] + INT32)
        found = np.minimum(np.searchsorted(index.keys, wanted), len(index.keys) - 1)
        codes[narrow] = np.where(index.keys[found] == wanted, index.codes[found], -1)
    if index.wide:
        for at in np.flatnonzero(candidate & ~narrow).tolist():
            codes[at] = index.wide.get(int(per_sample[at]), {}).get(int(raw[at]), -1)
    return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), index.names)


def event_table(event: EventBody) -> pa.Table:
    return pa.Table.from_pylist([{
        "boot": event.boot.hex(), "seq": event.seq, "time": event.time_ms,
        "event": event.type, "data": json.dumps(event.data, sort_keys=True),
        "positions": json.dumps({name: list(at) for name, at in event.positions.items()}),
    }], schema=EVENTS)


def batch_table(body: BatchBody, worker: str) -> pa.Table:
    return pa.Table.from_pylist([{
        "boot": body.boot.hex(), "seq": body.seq, "t0": body.t0_ms, "t1": body.t1_ms,
        "clock": body.clock, "config_version": min(body.config_version, (1 << 63) - 1),
        "dictionary_id": body.dictionary_id.hex(), "samples": body.sample_count,
        "health": json.dumps(dict(body.health), sort_keys=True), "worker": worker,
    }], schema=BATCHES)


def partition(time_ms: int, vehicle: str) -> str:
    """`date=YYYY-MM-DD/vehicle=V`, the vehicle percent-encoded as Hive does."""
    day = datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d")
    return f"date={day}/vehicle={quote(vehicle, safe='')}"


class DatasetWriter:
    """Buffers tables per (table, partition) and writes them out at `flush()`."""

    def __init__(self, root: Path, worker: str, max_rows: int = 2_000_000) -> None:
        if not worker or "/" in worker:
            raise ValueError(f"worker name {worker!r}: must be non-empty, without '/'")
        self.root = root
        self.worker = worker
        self.max_rows = max_rows  # samples kept in memory before a flush comes early
        self._pending: dict[tuple[str, str], list[pa.Table]] = defaultdict(list)
        self._pending_rows = 0
        self._files = 0
        self.written_rows = 0

    def add_received(self, body: BatchBody) -> None:
        """A fresh, verified batch, decodable or not: its row in `batches` (sequence coverage
        is computed from these)."""
        self._pending[("batches", partition(body.t0_ms, body.vehicle))].append(
            batch_table(body, self.worker))

    def add_samples(self, body: BatchBody, dictionary: Sequence[SignalDef]) -> None:
        """A decoded batch's rows in `samples`."""
        if body.series:
            table = sample_table(body, dictionary)
            self._pending[("samples", partition(body.t0_ms, body.vehicle))].append(table)
            self._pending_rows += table.num_rows
            if self._pending_rows >= self.max_rows:
                self.flush()

    def add_event(self, event: EventBody) -> None:
        self._pending[("events", partition(event.time_ms, event.vehicle))].append(
            event_table(event))

    def flush(self) -> list[Path]:
        """Write one file per table and partition with what came since the last flush."""
        written = []
        pending, self._pending = self._pending, defaultdict(list)
        self._pending_rows = 0
        for (table, where), parts in sorted(pending.items()):
            folder = self.root / table / where
            folder.mkdir(parents=True, exist_ok=True)
            data = pa.concat_tables(parts)
            path = folder / f"part-{self.worker}-{self._files}.parquet"
            self._files += 1
            _write_atomically(data, path)
            self.written_rows += data.num_rows if table == "samples" else 0
            written.append(path)
        return written


def _write_atomically(table: pa.Table, path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            pq.write_table(table, file, compression="zstd")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
