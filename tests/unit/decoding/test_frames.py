import random
import threading
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from cantools.database.can import Message, Signal
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import FrameStore, bit_extractor, message_decoder, raw_reader
from agent.sampling.plan import build_plan
from agent.sources.canbus import BATCH_FRAMES, CanBusConfig, CanBusSource
from agent.sources.health import SourceHealth
from agent.sources.registry import open_source
from tests.helpers.dbc_fixtures import write_small_dbc


def _placements(byte_order: str, shortest: int = 1) -> Iterator[tuple[int, int]]:
    """Every (start, length) of a signal that fits in 8 bytes, in DBC numbering."""
    for start in range(64):
        msb = start if byte_order == "little_endian" else 8 * (start // 8) + (7 - start % 8)
        for length in range(shortest, 64 - msb + 1):
            yield start, length


@pytest.mark.parametrize("byte_order", ["little_endian", "big_endian"])
def test_bit_extractor_matches_cantools_for_every_placement(byte_order):
    rng = random.Random(7)
    checked = 0
    for start, length in _placements(byte_order):
        signal = Signal("S", start=start, length=length, byte_order=byte_order)
        message = Message(frame_id=1, name="M", length=8, signals=[signal], strict=True)
        data = bytes(rng.getrandbits(8) for _ in range(8))
        expected = message.decode(data, scaling=False, decode_choices=False)["S"]
        assert bit_extractor(signal)(data) == expected, (start, length)
        checked += 1
    assert checked > 2000


@pytest.mark.parametrize("byte_order", ["little_endian", "big_endian"])
def test_raw_reader_matches_cantools_for_every_placement_signed_or_not(byte_order):
    """The per-frame `stats` path reads raw values itself; cantools (scaling off) is the
    oracle, including long payloads it trims (allow_excess)."""
    rng = random.Random(11)
    checked = 0
    for start, length in _placements(byte_order, shortest=2):
        for is_signed in (False, True):
            signal = Signal("S", start=start, length=length, byte_order=byte_order,
                            is_signed=is_signed)
            message = Message(frame_id=1, name="M", length=8, signals=[signal], strict=True)
            read = raw_reader(signal)
            assert read is not None
            for _ in range(3):
                data = bytes(rng.getrandbits(8) for _ in range(rng.choice([8, 8, 12])))
                expected = message.decode(data, scaling=False, decode_choices=False,
                                          allow_excess=True)["S"]
                assert read(data) == expected, (start, length, is_signed)
                checked += 1
    assert checked > 10_000


def test_raw_reader_leaves_float_signals_to_cantools():
    signal = Signal("F", start=0, length=32)
    signal.is_float = True
    assert raw_reader(signal) is None


def test_stats_of_every_signal_of_the_example_dbc_match_cantools():
    """Every integer signal of dbc/vehicle.dbc read by `raw_reader` on random payloads."""
    database = load_dbc([Path(__file__).resolve().parents[3] / "dbc" / "vehicle.dbc"]).database
    rng = random.Random(5)
    checked = 0
    for message in database.messages:
        if message.is_multiplexed():
            continue
        for _ in range(5):
            data = bytes(rng.getrandbits(8) for _ in range(message.length))
            decoded = message.decode(data, scaling=False, decode_choices=False)
            for signal in message.signals:
                read = raw_reader(signal)
                if read is not None:
                    assert read(data) == decoded[signal.name], (message.name, signal.name)
                    checked += 1
    assert checked > 2000


def _store(tmp_path, rules=()):
    dbc = load_dbc([write_small_dbc(tmp_path)])
    plan = build_plan(SamplingConfig(signals=tuple(rules)), {"can0": dbc.database})
    health = SourceHealth()
    return FrameStore(dbc.database, plan.for_source("can0"), health), plan, health, dbc.database


def _frame(frame_id, data, t, extended=False):
    return can.Message(arbitration_id=frame_id, data=data, timestamp=t, is_extended_id=extended)


def _sample(store, plan, at, period=1000, stale_after=10.0):
    values = {}
    store.sample_last(period, at, stale_after, lambda index, value: values.__setitem__(
        plan.signals[index].key, value))
    return values


def test_latest_payload_is_decoded_raw_at_the_tick(tmp_path):
    store, plan, health, db = _store(tmp_path)
    engine = db.get_message_by_name("Engine")
    store.accept(_frame(0x100, engine.encode({"Speed": 10.0, "Temp": 20, "Gear": 1}), 1.0))
    store.accept(_frame(0x100, engine.encode({"Speed": 55.55, "Temp": -30, "Gear": 3}), 1.5))
    values = _sample(store, plan, 2.0)
    assert values["can0.Engine.Speed"] == 5555
    assert values["can0.Engine.Temp"] == 10  # raw: -30 °C with offset -40
    assert values["can0.Engine.Gear"] == 3
    assert health.frames == 2


def test_multiplexed_pages_are_kept_apart(tmp_path):
    store, plan, _, db = _store(tmp_path)
    cells = db.get_message_by_name("Cells")
    store.accept(_frame(0x300, cells.encode({"Group": 0, "CellA_0": 3.1, "CellB_0": 3.2}), 1.0))
    store.accept(_frame(0x300, cells.encode({"Group": 1, "CellA_1": 3.3, "CellB_1": 3.4}), 1.1))
    values = _sample(store, plan, 2.0)
    assert {k: v for k, v in values.items() if "Cells" in k} == {
        "can0.Cells.CellA_0": 3100, "can0.Cells.CellB_0": 3200,
        "can0.Cells.CellA_1": 3300, "can0.Cells.CellB_1": 3400}
    assert not any(s.signal == "Group" for s in plan.signals)


def test_bad_frames_are_counted_and_a_short_one_gives_only_the_signals_that_fit(tmp_path,
                                                                              caplog):
    store, plan, health, db = _store(tmp_path)
    engine = db.get_message_by_name("Engine")
    store.accept(_frame(0x100, engine.encode({"Speed": 1.0, "Temp": 0, "Gear": 0}), 1.0))
    store.accept(_frame(0x100, b"\x01\x02", 1.1))
    store.accept(_frame(0x100, b"\x01\x02", 1.2))
    store.accept(_frame(0x300, bytes([9, 0, 0, 0, 0, 0, 0, 0]), 1.3))
    store.accept(_frame(0x7FF, bytes(8), 1.4))
    store.accept(can.Message(arbitration_id=0x100, is_error_frame=True, timestamp=1.5))
    store.accept(_frame(0x100, bytes(8), 1.6, extended=True))
    assert (health.short_frames, health.decode_errors, health.ignored, health.error_frames) == (
        2, 1, 2, 1)
    sampled = _sample(store, plan, 2.0)
    # The short frame is the newest: Speed (bytes 0-1) is read from it, exactly as cantools'
    # allow_truncated reads it; Temp and Gear do not fit and are not sampled at all (the
    # full frame's older values would be wrong).
    assert sampled["can0.Engine.Speed"] == 0x0201 == engine.decode(
        b"\x01\x02", scaling=False, allow_truncated=True)["Speed"]
    assert "can0.Engine.Temp" not in sampled and "can0.Engine.Gear" not in sampled
    assert caplog.text.count("has 2 bytes but the DBC says 8") == 1
    assert "multiplexer value 9" in caplog.text



class _RecordingClock:
    """An event clock with no quiet span: every frame is advanced to, and recorded."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def advance(self, now: float) -> None:
        self.times.append(now)

    def quiet_span(self) -> tuple[int, int]:
        return 0, 0


def test_a_received_batch_is_kept_and_counted_as_frame_by_frame(tmp_path):
    """`accept_all` (the ingest hot path) against `accept` on every kind of frame, and event
    time moved to each frame before it is kept."""
    _, _, _, db = _store(tmp_path)
    engine, cells = db.get_message_by_name("Engine"), db.get_message_by_name("Cells")
    frames = [_frame(0x100, engine.encode({"Speed": 1.0, "Temp": 0, "Gear": 0}), 1.0),
              _frame(0x300, cells.encode({"Group": 0, "CellA_0": 3.1, "CellB_0": 3.2}), 1.1),
              _frame(0x100, b"\x01\x02", 1.2),
              _frame(0x300, bytes([9, 0, 0, 0, 0, 0, 0, 0]), 1.3),
              _frame(0x7FF, bytes(8), 1.4),
              can.Message(arbitration_id=0x100, is_error_frame=True, timestamp=1.5),
              _frame(0x100, bytes(8), 1.6, extended=True),
              can.Message(arbitration_id=0x100, is_remote_frame=True, timestamp=1.7),
              _frame(0x100, engine.encode({"Speed": 55.55, "Temp": -30, "Gear": 3}), 1.8)]
    rules = [SignalRule(match="can0.*"), SignalRule(match="can0.Engine.Speed", mode="stats")]
    one_by_one, plan, health_one, _ = _store(tmp_path, rules)
    for frame in frames:
        one_by_one.accept(frame)
    batched, _, health_all, _ = _store(tmp_path, rules)
    clock = _RecordingClock()
    batched.accept_all(frames, clock)
    assert clock.times == [frame.timestamp for frame in frames]
    assert health_all == health_one and health_one.frames == len(frames)
    assert _sample(batched, plan, 2.0) == _sample(one_by_one, plan, 2.0) != {}
    stats: list[tuple] = []
    for store in (one_by_one, batched):
        store.take_stats(range(len(plan.signals)), lambda *values: stats.append(values))
    assert stats[0] == stats[1] and len(stats) == 2

def test_stale_payloads_are_not_sampled(tmp_path):
    store, plan, _, db = _store(tmp_path)
    engine = db.get_message_by_name("Engine")
    store.accept(_frame(0x100, engine.encode({"Speed": 1.0, "Temp": 0, "Gear": 0}), 1.0))
    assert "can0.Engine.Speed" in _sample(store, plan, 11.0)
    assert "can0.Engine.Speed" not in _sample(store, plan, 11.5)


def test_stats_accumulate_every_frame_and_reset_when_taken(tmp_path):
    store, plan, _, db = _store(tmp_path, [SignalRule("*"),
                                           SignalRule("can0.Engine.Speed", mode="stats")])
    engine = db.get_message_by_name("Engine")
    for t, speed in [(1.0, 10.0), (1.1, 30.0), (1.2, 20.0)]:
        store.accept(_frame(0x100, engine.encode({"Speed": speed, "Temp": 0, "Gear": 0}), t))
    index = next(s.index for s in plan.signals if s.key == "can0.Engine.Speed")
    taken = []
    store.take_stats([index], lambda *args: taken.append(args))
    assert taken == [(index, 1000, 3000, 6000, 3)]
    store.take_stats([index], lambda *args: taken.append(args))
    assert len(taken) == 1
    assert "can0.Engine.Speed" not in _sample(store, plan, 2.0)


def test_float_and_extended_frames(tmp_path):
    store, plan, _, db = _store(tmp_path)
    motor = db.get_message_by_name("Motor")
    diag = db.get_message_by_name("Diag")
    store.accept(_frame(0x400, motor.encode({"Torque": -12.5}), 1.0))
    store.accept(_frame(0x18FF0000, diag.encode({"Dtc": 4000000000}), 1.0, extended=True))
    values = _sample(store, plan, 2.0)
    assert values["can0.Motor.Torque"] == -12.5
    assert values["can0.Diag.Dtc"] == 4000000000


def test_filters_cover_exactly_the_planned_ids(tmp_path):
    store, _, _, _ = _store(tmp_path, [SignalRule("can0.Engine.*"), SignalRule("can0.Diag.*")])
    assert store.can_filters() == [
        {"can_id": 0x100, "can_mask": 0x7FF, "extended": False},
        {"can_id": 0x18FF0000, "can_mask": 0x1FFFFFFF, "extended": True}]


def test_a_bus_that_cannot_filter_gets_no_python_filters_and_still_drops_unplanned_ids(
        tmp_path):
    store, _, _, _ = _store(tmp_path, [SignalRule("can0.Engine.*")])
    health = SourceHealth()
    source = open_source(CanBusConfig(name="can0", type="virtual", channel="t-filters"),
                         store.can_filters(), health)
    bus = source.open_bus()
    sender = can.Bus(interface="virtual", channel="t-filters")
    try:
        assert bus.filters is None  # python-can would test every frame in Python
        sender.send(can.Message(arbitration_id=0x7AB, data=bytes(8), is_extended_id=False))
        frame = bus.recv(1)
        assert frame is not None and frame.arbitration_id == 0x7AB
        store.accept(frame)
        assert store.ignored_ids == {0x7AB: 1}  # the store drops it with one lookup
    finally:
        sender.shutdown()
        bus.shutdown()


def test_the_receive_loop_takes_queued_frames_in_batches_through_python_cans_filters(
        tmp_path):
    """The loop reads what is already queued below `recv`; a bus whose filters python-can
    applies in Python (here a virtual bus opened with filters) must still get only the
    matching frames, in order, in batches of at most BATCH_FRAMES."""
    health = SourceHealth()
    filters = [{"can_id": 0x100, "can_mask": 0x7FF, "extended": False}]
    source = CanBusSource("can0", health, {"interface": "virtual", "channel": "t-batches"},
                          filters)
    bus = can.Bus(interface="virtual", channel="t-batches", can_filters=filters)
    frames = [_frame(0x100 if n % 3 else 0x200, bytes([n % 256]) * 8, n / 1000)
              for n in range(300)]
    for frame in frames:
        bus.queue.put_nowait(frame)
    batches: list[list[can.Message]] = []
    source.end_of_data = lambda: True  # type: ignore[method-assign]
    try:
        source.receive(bus, batches.append, lambda now: None, threading.Event())
    finally:
        bus.shutdown()
    assert [f for batch in batches for f in batch] == [f for f in frames
                                                      if f.arbitration_id == 0x100]
    assert max(map(len, batches)) == BATCH_FRAMES and len(batches) > 3
    assert source.finished.is_set()


def _fits(signal, length: int) -> bool:
    return _bytes_needed(signal) <= length


def _bytes_needed(signal) -> int:
    if signal.byte_order == "little_endian":
        return (signal.start + signal.length - 1) // 8 + 1
    return (8 * (signal.start // 8) + (7 - signal.start % 8) + signal.length - 1) // 8 + 1


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_messages_with_overlapping_signals_decode_exactly_signal_by_signal(data):
    """Real DBCs overlap signals (VW MQB PLA_01, Toyota PCS_HUD): cantools cannot unpack such a
    message as a whole; each signal is still decoded, and equals the bits it names, for full,
    short and long payloads."""
    from tests.unit.decoding.test_real_dbcs import opendbc_folder

    folder = opendbc_folder()
    database = load_dbc([folder / "vw_mqb.dbc"]).database
    message = database.get_message_by_name("PLA_01")
    with pytest.raises(Exception):  # noqa: B017 - whatever cantools raises: it cannot
        message.decode(bytes(8), decode_choices=False, scaling=False)
    decode = message_decoder(message)
    payload = data.draw(st.binary(min_size=0, max_size=message.length + 2))
    decoded = decode(payload)
    for signal in message.signals:
        if signal.is_float or not _fits(signal, min(len(payload), message.length)):
            assert signal.name not in decoded or signal.is_float
            continue
        padded = payload[:message.length]
        assert decoded[signal.name] == raw_reader(signal)(padded), signal.name


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_the_decoder_is_cantools_own_decode_for_tidy_messages(data):
    from tests.unit.decoding.test_real_dbcs import opendbc_folder

    database = load_dbc([opendbc_folder() / "tesla_model3_party.dbc"]).database
    message = data.draw(st.sampled_from([m for m in database.messages if not m.is_multiplexed()]))
    payload = data.draw(st.binary(min_size=0, max_size=message.length + 2))
    assert message_decoder(message)(payload) == message.decode(
        payload, decode_choices=False, scaling=False, allow_truncated=True, allow_excess=True)


def test_a_signal_past_its_message_end_does_not_take_the_others_with_it():
    """mazda_3_2019's CAM_KEEP_ALIVE_1 has a 30-bit signal starting in byte 6 of 8: cantools
    refuses the message whole; the other three signals are still decoded."""
    from tests.unit.decoding.test_real_dbcs import opendbc_folder

    database = load_dbc([opendbc_folder() / "mazda_3_2019.dbc"]).database
    message = database.get_message_by_name("CAM_KEEP_ALIVE_1")
    payload = bytes(range(1, 9))
    decoded = message_decoder(message)(payload)
    assert decoded == {name: raw_reader(message.get_signal_by_name(name))(payload)
                       for name in ("NEW_SIGNAL_1", "NEW_SIGNAL_2", "NEW_SIGNAL_3")}


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_ticks_sample_what_cantools_decodes_on_real_dbcs(data):
    """A tick reads plain messages' bits straight from the payload and leaves the rest to
    cantools: either way every sampled raw value is cantools' own, on production DBCs (with
    overlapping signals, floats, multiplexing) and full, short and long payloads."""
    from tests.unit.decoding.test_real_dbcs import opendbc_folder

    name = data.draw(st.sampled_from(["tesla_model3_party.dbc", "vw_mqb.dbc",
                                      "ford_lincoln_base_pt.dbc", "mazda_3_2019.dbc",
                                      "bmw_e9x_e8x.dbc"]))
    database = load_dbc([opendbc_folder() / name]).database
    message = data.draw(st.sampled_from(database.messages))
    plan = build_plan(SamplingConfig(), {"can0": database})
    planned = [s for s in plan.signals if s.frame_id == message.frame_id]
    store = FrameStore(database, planned, SourceHealth())
    payload = data.draw(st.binary(min_size=0, max_size=message.length + 2))
    store.accept(_frame(message.frame_id, payload, 1.0, message.is_extended_frame))
    values = {}
    store.sample_last(planned[0].period_ms if planned else 1000, 2.0, 10.0,
                      lambda index, value: values.__setitem__(plan.signals[index].signal, value))
    try:
        expected = message_decoder(message)(payload)
    except Exception:  # cantools refuses the payload: nothing may be sampled
        expected = {}
    wanted = {s.signal for s in planned}
    if message.is_multiplexed():  # a page's signals, when the selector names a page
        assert values.items() <= {k: v for k, v in expected.items() if k in wanted}.items()
    else:
        assert values == {k: v for k, v in expected.items() if k in wanted}
