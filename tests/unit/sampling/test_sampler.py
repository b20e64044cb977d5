import contextlib
import math
import random
import threading

import can
import pytest

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import FrameStore
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.sampling.sampler import Sampler
from agent.sources.health import SourceHealth
from tests.helpers.dbc_fixtures import write_small_dbc


@pytest.fixture
def rig(tmp_path):
    def make(rules=(SignalRule("can0.Engine.Speed"),), window_ms=10_000, stale_after=10.0):
        dbc = load_dbc([write_small_dbc(tmp_path)])
        plan = build_plan(SamplingConfig(stale_after=stale_after, signals=tuple(rules)),
                          {"can0": dbc.database})
        ring = Ring(10_000)
        store = FrameStore(dbc.database, plan.for_source("can0"), SourceHealth())
        windows = []
        sampler = Sampler(plan, ring, {"can0": store}, window_ms,
                          lambda t0, t1: windows.append((t0, t1, ring.written)))
        engine = dbc.database.get_message_by_name("Engine")

        def feed(t, speed):
            sampler.advance(t)
            store.accept(can.Message(arbitration_id=0x100, timestamp=t, is_extended_id=False,
                                     data=engine.encode({"Speed": speed, "Temp": 0, "Gear": 0})))
        return sampler, ring, windows, feed, plan
    return make


def test_last_sample_is_the_value_strictly_before_the_tick(rig):
    sampler, ring, _, feed, _ = rig()
    feed(100.2, 1.0)
    feed(100.9, 2.0)
    feed(101.0, 3.0)   # exactly at the tick: belongs to the next one
    feed(101.5, 4.0)
    feed(102.0, 5.0)
    assert [(r.time_ms, r.value) for r in ring.read(0)] == [(101000, 200), (102000, 400)]


def test_stats_cover_the_period_starting_at_their_label(rig):
    sampler, ring, _, feed, plan = rig([SignalRule("can0.Engine.Speed", mode="stats")])
    for t, speed in [(100.1, 1.0), (100.5, 3.0), (101.2, 10.0), (101.3, 20.0), (102.1, 0.0)]:
        feed(t, speed)
    records = [(r.time_ms, r.field, r.value) for r in ring.read(0)]
    assert records == [
        (100000, Field.MIN, 100), (100000, Field.MAX, 300), (100000, Field.SUM, 400),
        (100000, Field.COUNT, 2),
        (101000, Field.MIN, 1000), (101000, Field.MAX, 2000), (101000, Field.SUM, 3000),
        (101000, Field.COUNT, 2)]


def test_windows_seal_at_their_boundary_with_exactly_their_samples(rig):
    sampler, ring, windows, feed, _ = rig(window_ms=5000)
    t = 103.5
    while t < 116:
        feed(t, 1.0)
        t += 0.25
    assert [(t0, t1) for t0, t1, _ in windows] == [(100000, 105000), (105000, 110000),
                                                   (110000, 115000)]
    records = ring.read(0)
    cursor = 0
    for t0, t1, end in windows:
        in_window = records[cursor:end]
        assert in_window and all(t0 <= r.time_ms < t1 for r in in_window)
        cursor = end
    assert [r.time_ms for r in records[windows[1][2] - 5:windows[1][2]]] == [
        105000, 106000, 107000, 108000, 109000]


def test_finish_seals_the_partial_window(rig):
    sampler, ring, windows, feed, _ = rig()
    feed(100.5, 1.0)
    feed(102.5, 2.0)
    sampler.finish()
    assert windows == [(100000, 102501, 2)]


def test_a_quiet_bus_still_ticks_and_stale_values_stop(rig):
    sampler, ring, windows, feed, _ = rig(stale_after=3.0)
    feed(100.5, 1.0)
    sampler.advance(110.0)
    assert [r.time_ms for r in ring.read(0)] == [101000, 102000, 103000]
    assert windows == [(100000, 110000, 3)]


def test_clock_jump_restarts_instead_of_ticking_through_the_gap(rig):
    sampler, ring, windows, feed, _ = rig(window_ms=10_000)
    feed(100.5, 1.0)
    feed(101.5, 2.0)
    feed(5000.2, 3.0)   # an RTC set by NTP
    feed(5001.5, 4.0)
    assert windows[0] == (100000, 101501, 1)
    assert [r.time_ms for r in ring.read(0)] == [101000, 5001000]
    feed(4000.0, 5.0)   # and back
    assert len(windows) == 2


def test_stats_under_way_are_emitted_before_a_jump_not_merged_after_it(rig):
    sampler, ring, windows, feed, _ = rig([SignalRule("can0.Engine.Speed", mode="stats")])
    feed(100.2, 1.0)
    feed(100.4, 3.0)
    feed(5000.5, 9.0)
    feed(5001.2, 0.0)
    stats = [(r.time_ms, r.field, r.value) for r in ring.read(0)]
    assert stats[:4] == [(100000, Field.MIN, 100), (100000, Field.MAX, 300),
                         (100000, Field.SUM, 400), (100000, Field.COUNT, 2)]
    assert stats[4:] == [(5000000, Field.MIN, 900), (5000000, Field.MAX, 900),
                         (5000000, Field.SUM, 900), (5000000, Field.COUNT, 1)]
    assert windows[0][:2] == (100000, 100401)


def test_flush_seals_at_now_and_keeps_every_label_below_the_end(rig):
    sampler, ring, windows, feed, _ = rig()
    feed(100.5, 1.0)
    feed(102.0, 2.0)
    assert sampler.seal_now()
    assert windows == [(100000, 102001, 2)]
    assert max(r.time_ms for r in ring.read(0)) < 102001
    feed(103.5, 3.0)
    assert [r.time_ms for r in ring.read(windows[0][2])] == [103000]


def test_time_going_backwards_a_little_is_ignored(rig):
    sampler, ring, windows, feed, _ = rig()
    feed(100.5, 1.0)
    feed(101.5, 2.0)
    feed(101.2, 3.0)
    feed(102.5, 4.0)
    assert [(r.time_ms, r.value) for r in ring.read(0)] == [(101000, 100), (102000, 300)]


def test_ring_too_small_for_a_window_is_warned_about(tmp_path, caplog):
    from agent.sampling.sampler import check_ring_size, records_per_window

    dbc = load_dbc([write_small_dbc(tmp_path)])
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.Engine.Speed", period=0.1),
        SignalRule("can0.Motor.Torque", mode="stats"))), {"can0": dbc.database})
    assert records_per_window(plan, 60_000) == 600 + 60 * 4
    check_ring_size(Ring(2 * 840), plan, 60_000)
    assert "raise [ring] memory_mb" not in caplog.text
    check_ring_size(Ring(2 * 840 - 1), plan, 60_000)
    assert "raise [ring] memory_mb" in caplog.text


def test_a_batch_samples_exactly_as_frame_by_frame(tmp_path):
    """`FrameStore.accept_all` moves event time once a batch inside the sampler's quiet span:
    the ring and the windows must come out as with `advance` + `accept` for every frame,
    through ticks, window ends, a frame exactly on a tick, late frames and a replay that
    loops back in time."""
    dbc = load_dbc([write_small_dbc(tmp_path)])
    rules = (SignalRule("can0.*"), SignalRule("can0.Engine.Speed", mode="stats"),
             SignalRule("can0.Engine.Temp", mode="stats"),  # signed
             SignalRule("can0.Chassis.Height", mode="stats"))  # signed, big-endian
    plan = build_plan(SamplingConfig(signals=rules), {"can0": dbc.database})
    engine = dbc.database.get_message_by_name("Engine")
    cells = dbc.database.get_message_by_name("Cells")
    chassis = dbc.database.get_message_by_name("Chassis")
    rng = random.Random(3)
    frames, t = [], 100.0
    for n in range(3000):
        t += rng.choice([0.003, 0.01, 0.05, 0.2])
        if n == 1000:
            t = float(math.ceil(t))  # exactly on a tick
        at = t - 0.02 if n % 97 == 0 else t  # a late frame now and then
        if n == 2000:
            t = at = 60.0  # the replay loops: more than two windows back
        if n % 5 == 4:
            data = chassis.encode({"Height": rng.uniform(-300, 300), "Odo": n})
            frames.append(can.Message(arbitration_id=0x200, timestamp=at, data=data,
                                      is_extended_id=False))
        elif n % 3:
            data = engine.encode({"Speed": rng.uniform(0, 200), "Temp": rng.randint(-40, 80),
                                  "Gear": rng.randint(0, 5)})
            frames.append(can.Message(arbitration_id=0x100, timestamp=at, data=data,
                                      is_extended_id=False))
        else:
            group = rng.randint(0, 1)
            data = cells.encode({"Group": group, f"CellA_{group}": 3.1, f"CellB_{group}": 3.2})
            frames.append(can.Message(arbitration_id=0x300, timestamp=at, data=data,
                                      is_extended_id=False))

    def rig() -> tuple[Sampler, FrameStore, Ring, list]:
        ring, windows = Ring(100_000), []
        store = FrameStore(dbc.database, plan.for_source("can0"), SourceHealth())
        sampler = Sampler(plan, ring, {"can0": store}, 5_000,
                          lambda t0, t1: windows.append((t0, t1, ring.written)))
        return sampler, store, ring, windows

    sampler, store, ring_one, windows_one = rig()
    for frame in frames:
        sampler.advance(frame.timestamp)
        store.accept(frame)
    for batch_size in (lambda: 64, lambda: rng.randint(1, 64)):  # 64: the loop is mid-batch
        batched_sampler, batched, ring_all, windows_all = rig()
        position = 0
        while position < len(frames):
            size = batch_size()
            batched.accept_all(frames[position:position + size], batched_sampler)
            position += size
        assert len(windows_one) > 10 and windows_all == windows_one
        assert ring_all.read(0) == ring_one.read(0) and ring_one.written > 1000
        assert batched_sampler.now_ms == sampler.now_ms
        assert batched.health == store.health


def test_a_failed_seal_costs_its_window_not_the_time_after_it(tmp_path):
    """A seal that raises (a fault the pipeline logs) must not stop time: the frames after
    it, held by the event-time gate until the sampler has passed the window's end, still go
    to the store and the ticks after it are sampled. Before, the sampler's time had moved
    past moments it never did and the gate waited for them forever, spinning."""
    from agent.sampling.event_time import EventTimeGate

    dbc = load_dbc([write_small_dbc(tmp_path)])
    plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.Speed"),)),
                      {"can0": dbc.database})
    ring, health = Ring(10_000), SourceHealth()
    store = FrameStore(dbc.database, plan.for_source("can0"), health)
    windows, failures = [], [1]

    def on_window(t0: int, t1: int) -> None:
        if failures:
            failures.pop()
            raise RuntimeError("the first seal fails")
        windows.append((t0, t1))

    sampler = Sampler(plan, ring, {"can0": store}, 10_000, on_window)
    gate = EventTimeGate(sampler, {"can0": store}, {"can0": health}, 2.0, 10_000)
    engine = dbc.database.get_message_by_name("Engine")
    frames = [can.Message(arbitration_id=0x100, timestamp=100.0 + n * 0.25,
                          is_extended_id=False,
                          data=engine.encode({"Speed": n, "Temp": 0, "Gear": 0}))
              for n in range(200)]  # 100.0 to 149.75 s: window ends at 110, 120, 130, 140
    done = threading.Event()

    def offer_all() -> None:
        for start in range(0, len(frames), 20):
            # The pipeline logs a failure and goes on with the next batch.
            with contextlib.suppress(RuntimeError):
                gate.offer("can0", frames[start:start + 20])
        done.set()

    worker = threading.Thread(target=offer_all, daemon=True)
    worker.start()
    assert done.wait(60), "the gate spun on the moments the failed seal left behind"
    assert windows == [(110_000, 120_000), (120_000, 130_000), (130_000, 140_000)]
    assert health.frames == len(frames)
    assert {r.time_ms for r in ring.read(0)} >= set(range(111_000, 149_001, 1000))
