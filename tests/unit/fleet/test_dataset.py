"""The Parquet data set: the column-wise sample table equals the reference rows, partitions
and atomic files."""

import math

import pyarrow.parquet as pq
import pytest
from fleet.backend import sample_rows
from fleet.dataset import DatasetWriter, partition, sample_table

from agent.events.codec import EventBody
from agent.wire.body import BatchBody, Series, SeriesKind, SignalDef

T0 = 1_700_000_000_000
DICTIONARY = (
    SignalDef("can0.Engine.Gear", "", 1, 0, False, "last", {0: "P", 3: "D"}),
    SignalDef("gps.lat", "deg", 1, 0, True, "last"),
    SignalDef("can0.Engine.Speed", "km/h", -0.5, 10, False, "stats"),
    SignalDef("can0.Motor.Torque", "Nm", 2, 0, True, "stats"),
    SignalDef("can0.Odo.Total", "m", 1, 0, False, "last", is_unsigned64=True),
    SignalDef("can0.Engine.Temp", "degC", 0.01, -40, False, "last"),
)
SERIES = (
    Series(0, SeriesKind.INT_LAST, (T0, T0 + 1000, T0 + 2000), ((3, 0, 7),)),
    Series(1, SeriesKind.FLOAT_LAST, (T0, T0 + 1000), ((52.5, math.nan),)),
    Series(2, SeriesKind.INT_STATS, (T0 - 1000, T0), ((100, 4), (300, 8), (600, 12), (3, 2))),
    Series(3, SeriesKind.FLOAT_STATS, (T0,), ((-1.5,), (2.5,), (4.0,), (5,))),
    Series(4, SeriesKind.INT_LAST, (T0,), ((-1,),)),
    Series(5, SeriesKind.INT_LAST, (T0 + 500,), ((6500,),)),
)


def body(vehicle="v/1", series=SERIES, seq=7):
    return BatchBody(vehicle=vehicle, boot=bytes(range(16)), seq=seq, t0_ms=T0,
                     t1_ms=T0 + 60_000, clock="ntp", config_version=1, dbc_digest=bytes(32),
                     health={"can0.frames": 9}, dictionary_id=bytes(8), dictionary=None,
                     series=series)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    # `value` is float64 in the table (exact integers are in `raw`): numbers compare as floats.
    if isinstance(b, int | float) and not isinstance(b, bool) and a is not None:
        return a == pytest.approx(float(b), rel=1e-12)
    return a == b


def test_the_sample_table_holds_what_the_reference_rows_hold():
    table = sample_table(body(), DICTIONARY).to_pylist()
    rows = list(sample_rows(body(), DICTIONARY))
    assert len(table) == len(rows) == 10
    for got, want in zip(table, rows, strict=True):
        assert got["boot"] == want["boot"] and got["seq"] == want["seq"]
        assert got["time"].timestamp() == want["time"]
        assert got["signal"] == want["signal"] and got["unit"] == want["unit"]
        for name in ("value", "label", "min", "max", "mean", "count"):
            assert _same(got[name], want.get(name)), (got["signal"], name, got, want)
    gear = [row for row in table if row["signal"] == "can0.Engine.Gear"]
    assert [row["raw"] for row in gear] == [3, 0, 7]
    assert [row["label"] for row in gear] == ["D", "P", None]
    assert table[-2]["value"] == 2.0**64 - 1 and table[-2]["raw"] == -1  # u64 bit pattern
    assert all(row["raw"] is None for row in table if row["signal"] == "gps.lat")


def test_an_empty_batch_has_an_empty_table():
    assert sample_table(body(series=()), DICTIONARY).num_rows == 0


def test_files_are_partitioned_by_date_and_vehicle_and_written_whole(tmp_path):
    writer = DatasetWriter(tmp_path, "w1")
    for batch in (body(), body(seq=8)):
        writer.add_received(batch)
        writer.add_samples(batch, DICTIONARY)
    writer.add_event(EventBody(vehicle="v/1", boot=bytes(16), seq=0, time_ms=T0,
                               type="trip_start", data={"a": 1}, positions={},
                               config_version=1, clock="ntp", privacy=None))
    written = writer.flush()
    where = "date=2023-11-14/vehicle=v%2F1"
    assert sorted(str(p.relative_to(tmp_path)) for p in written) == [
        f"batches/{where}/part-w1-0.parquet", f"events/{where}/part-w1-1.parquet",
        f"samples/{where}/part-w1-2.parquet"]
    samples = pq.read_table(tmp_path / "samples" / where)
    assert samples.num_rows == 20 and "vehicle" not in samples.column_names
    assert [p.name for p in (tmp_path / "samples" / where).iterdir()] == ["part-w1-2.parquet"]
    assert writer.flush() == []  # nothing new
    assert partition(T0, "p-abc") == "date=2023-11-14/vehicle=p-abc"


def test_a_flush_comes_early_when_the_samples_in_memory_reach_the_bound(tmp_path):
    writer = DatasetWriter(tmp_path, "w1", max_rows=15)
    writer.add_samples(body(seq=1), DICTIONARY)
    assert not (tmp_path / "samples").exists()
    writer.add_samples(body(seq=2), DICTIONARY)  # 20 rows: written at once
    assert len(list((tmp_path / "samples").rglob("*.parquet"))) == 1
