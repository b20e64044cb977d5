"""devkit.bench.memory: how much vehicle time a soak covered, and the thinned drive of the long
soak. Sizes and spans, no timings."""

from __future__ import annotations

import os

import can
import cantools
from devkit.bench.common import DRIVE_LOG, VEHICLE_DBC
from devkit.bench.memory import resident_split, thin_drive, vehicle_seconds
from devkit.bench.startup import unit_environment

from agent.runtime.malloc import MALLOC_SETTINGS

BOOT, OTHER = b"a" * 16, b"b" * 16


def test_vehicle_time_is_what_the_batches_cover_not_a_count_of_batches():
    """Four loops of a 241 s drive sealed as windows cut at the loop ends, a quiet stretch with
    one heartbeat, a duplicate, a second boot: only t1 - t0 of distinct batches counts."""
    windows = [(BOOT, 0, 0, 60_000), (BOOT, 1, 60_000, 120_000),
               (BOOT, 2, 120_000, 120_500),  # a partial window (a flush, a time jump)
               (BOOT, 1, 60_000, 120_000),  # delivered twice
               (BOOT, 3, 3_720_000, 3_780_000),  # the heartbeat after an hour without a batch
               (OTHER, 0, 0, 30_000)]
    assert vehicle_seconds(windows) == 60 + 60 + 0.5 + 60 + 30
    assert vehicle_seconds([]) == 0


def test_the_thinned_drive_keeps_every_message_and_page_once_a_second(tmp_path):
    thinned = list(can.LogReader(str(thin_drive(tmp_path / "drive.log"))))
    original = list(can.LogReader(str(DRIVE_LOG)))
    assert {f.arbitration_id for f in thinned} == {f.arbitration_id for f in original}
    assert len(thinned) < len(original) / 5
    database = cantools.database.load_file(str(VEHICLE_DBC))
    cells = database.get_message_by_name("BMS_CellVoltages")
    pages = {cells.decode(f.data, scaling=False)["CellGroup"] for f in thinned
             if f.arbitration_id == cells.frame_id}
    assert pages == {cells.decode(f.data, scaling=False)["CellGroup"] for f in original
                     if f.arbitration_id == cells.frame_id}
    multiplexed = {m.frame_id for m in database.messages if m.is_multiplexed()}
    last: dict[int, float] = {}
    for frame in thinned:
        if frame.arbitration_id not in multiplexed:
            assert frame.timestamp - last.get(frame.arbitration_id, -1.0) >= 1.0
            last[frame.arbitration_id] = frame.timestamp


def test_the_bench_starts_the_agent_with_the_units_malloc_settings():
    settings = unit_environment()
    assert {name: settings.get(name) for name in MALLOC_SETTINGS} == {
        name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()}


def test_the_resident_split_reads_anonymous_and_file_pages():
    split = resident_split(os.getpid())
    assert set(split) == {"anon", "file"}
    assert split["anon"] > 0 and split["file"] > 0
