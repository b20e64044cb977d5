"""A parked car with silent buses, through the real pipeline in virtual time: the bundled drive
for two minutes, then a day of silence. Counts the bytes that would leave (every sealed batch
is spooled and submitted); asserts sizes and sequence numbers, never timings."""

from __future__ import annotations

import itertools
from pathlib import Path

import can
import pytest
from fleet.backend import Backend

from agent.config.schema import BatchConfig
from agent.output.batch import open_batch
from agent.output.spool import Spool, SpooledBatch
from agent.runtime.pipeline import build_pipeline
from agent.wire.keys import generate_key_pair, key_id, load_public_key
from tests.helpers.agent_setup import BUNDLED_DRIVE
from tests.helpers.pipeline_parts import agent_config, shared_parts

DRIVING_S = 120
PARKED_S = 24 * 3600
MONTH_DAYS = 30


def _run(tmp_path: Path, heartbeat: float,
         parked_s: int = PARKED_S) -> tuple[list[SpooledBatch], float]:
    """Drive, then park for `parked_s`; the batches submitted, and the drive's last frame time."""
    generate_key_pair(tmp_path / "vehicle.key")
    # A few messages, not all 931 signals: a day of ticks stays quick, and what a parked
    # window costs (its health counters) does not depend on the plan.
    config = agent_config(tmp_path, signals=("can0.BMS_Pack.*", "can0.ESP_VehicleSpeed.*"),
                          batch=BatchConfig(heartbeat=heartbeat))
    spool = Spool(tmp_path / "spool.sqlite", 2**30)
    submitted: list[SpooledBatch] = []
    parts = shared_parts(tmp_path, spool, submitted.append, ring_mb=4.0)
    pipeline = build_pipeline(config, parts, None)
    store, sampler = pipeline.stores["can0"], pipeline.sampler
    first = last = None
    for frame in can.LogReader(str(BUNDLED_DRIVE)):
        first = first or frame.timestamp
        if frame.timestamp - first >= DRIVING_S:
            break
        last = frame.timestamp
        sampler.advance(frame.timestamp)
        store.accept(frame)
    assert last is not None
    # Silent buses: the daemon's idle beat moves event time on (agent/sampling/event_time.py).
    for second in range(1, parked_s + 1):
        sampler.advance(last + second)
    spool.close()
    return submitted, last


@pytest.fixture(scope="module")
def parked(tmp_path_factory):
    directory = tmp_path_factory.mktemp("parked")
    batches, last = _run(directory, heartbeat=3600.0)
    return batches, last, load_public_key(directory / "vehicle.pub")


def test_a_parked_day_sends_a_heartbeat_an_hour_and_no_empty_batch_between(parked):
    batches, last, public = parked
    keys = {key_id(public): public}
    bodies = [open_batch(b.envelope, keys) for b in batches]
    assert [b.seq for b in bodies] == list(range(len(bodies)))
    driving = [b for b in bodies if b.sample_count]
    quiet = [b for b in bodies if not b.sample_count]
    # Samples stop once the last values are stale (10 s after the last frame).
    assert driving[-1].t0_ms <= last * 1000 + 10_000
    # A heartbeat each hour after the last batch with samples, as far as the day reaches.
    assert len(quiet) == (round((last + PARKED_S) * 1000) - driving[-1].t1_ms) // 3_600_000
    assert len(quiet) >= PARKED_S // 3600 - 1
    ends = [b.t1_ms for b in [driving[-1], *quiet]]
    assert {b - a for a, b in itertools.pairwise(ends)} == {3_600_000}
    assert all(b.health and b.series == () and b.dictionary is None for b in quiet)
    # The dictionary travelled once, in the first batch; the backend sees no gap.
    assert [b.dictionary is not None for b in bodies].count(True) == 1
    backend = Backend(keys)
    for batch in reversed(batches):  # any order, as a shared subscription delivers
        assert backend.receive(batch.envelope).ok
    assert backend.report()["gaps"] == [] and backend.report()["duplicates"] == 0


def test_parked_bytes_a_month_stay_under_two_megabytes(parked, tmp_path):
    batches, last, _ = parked
    quiet = [len(b.envelope) for b in batches if b.seq > 0][-(PARKED_S // 3600 - 1):]
    # A day of heartbeats (the first hour's one included) times 30 days.
    assert sum(quiet) * 24 / len(quiet) * MONTH_DAYS <= 2_000_000
    # Sealing every window (`heartbeat = 0`, the behaviour before #26) costs 30x more (three
    # parked hours say so as well as a day).
    every_window, _ = _run(tmp_path, heartbeat=0, parked_s=3 * 3600)
    parked_windows = [len(b.envelope) for b in every_window][-120:]
    assert sum(parked_windows) / len(parked_windows) * 60 > 30 * sum(quiet) / len(quiet)
