"""The traffic generator keeps its promises: checked on the log it writes, read back through
python-can and decoded with cantools, never through the generator's own helpers."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import can
import pytest
from cantools.database.can import Database, Message

from agent.decoding.dbc import load_dbc
from tests.helpers.dbc_fixtures import write_small_dbc
from tests.helpers.traffic import (
    FD_LENGTHS,
    Bus,
    Frame,
    Knobs,
    TrafficSummary,
    generate_frames,
    generate_log,
    group_cars,
    load_opendbc,
    pick_opendbc,
)

# Extended IDs and a multiplexer (VW MQB), CAN FD up to 32 bytes (Hyundai CAN FD), and cycle
# times from GenMsgCycleTime plus a multiplexer (Tesla's Bosch radar).
DBC_NAMES = ("vw_mqb.dbc", "hyundai_canfd_generated.dbc", "tesla_radar_bosch_generated.dbc")
START = 1_700_000_000.0
DURATION = 20.0
KNOBS = Knobs()


@dataclass
class Generated:
    path: Path
    summary: TrafficSummary
    databases: dict[str, Database]
    frames: list[can.Message]

    def by_message(self) -> dict[tuple[str, int], list[can.Message]]:
        found: dict[tuple[str, int], list[can.Message]] = defaultdict(list)
        for frame in self.frames:
            found[frame.channel, frame.arbitration_id].append(frame)
        return found

    def dbc_message(self, frame: can.Message) -> Message | None:
        database = self.databases[frame.channel]
        try:
            return database.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            return None


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    databases = {f"can{i}": load_opendbc(name).database for i, name in enumerate(DBC_NAMES)}
    path = tmp_path_factory.mktemp("traffic") / "car.log"
    buses = [Bus(channel, database) for channel, database in databases.items()]
    summary = generate_log(path, buses, duration=DURATION, start=START, seed=7, knobs=KNOBS)
    return Generated(path, summary, databases, list(can.LogReader(path)))


def defined_pages(message: Message) -> set[int]:
    selector = next(s for s in message.signals if s.is_multiplexer and s.multiplexer_signal is None)
    return {
        page
        for signal in message.signals
        if signal.multiplexer_signal == selector.name
        for page in signal.multiplexer_ids or ()
    }


def is_fd(message: Message) -> bool:
    return bool(message.is_fd) or message.length > 8


def test_channels_round_trip_through_python_can(generated: Generated) -> None:
    counts = Counter(frame.channel for frame in generated.frames)

    assert counts == generated.summary.frames_per_channel
    assert set(counts) == {"can0", "can1", "can2"}
    assert sum(counts.values()) == generated.summary.frames


def test_every_dbc_message_is_sent_on_its_own_bus(generated: Generated) -> None:
    sent = generated.by_message()

    for channel, database in generated.databases.items():
        missing = [m.name for m in database.messages if (channel, m.frame_id) not in sent]
        assert missing == [], channel


def test_the_log_is_in_time_order_and_each_message_strictly(generated: Generated) -> None:
    stamps = [frame.timestamp for frame in generated.frames]
    assert stamps == sorted(stamps)
    assert stamps[0] >= START and stamps[-1] < START + DURATION

    for key, frames in generated.by_message().items():
        own = [frame.timestamp for frame in frames]
        assert all(a < b for a, b in itertools.pairwise(own)), key


def test_gaps_follow_each_messages_cycle_time(generated: Generated) -> None:
    silences = {(s.channel, s.frame_id): s for s in generated.summary.silences}
    from_dbc = 0
    checked = 0
    for (channel, frame_id), frames in generated.by_message().items():
        message = generated.dbc_message(frames[0])
        if message is None:
            continue
        plan = generated.summary.message(channel, frame_id)
        if message.cycle_time:
            # The DBC's own cycle, straight from cantools (all of these are within 10 ms..10 s).
            assert plan.cycle == message.cycle_time / 1000
            from_dbc += 1
        else:
            assert round(plan.cycle * 1000) in KNOBS.fallback_cycles_ms
        silence = silences.get((channel, frame_id))
        gaps = [
            b.timestamp - a.timestamp
            for a, b in itertools.pairwise(frames)
            if silence is None or a.timestamp != silence.last_before
        ]
        # Jitter moves each frame by at most 10 % of the cycle, so no gap strays beyond 20 %.
        low, high = plan.cycle * (1 - 2 * KNOBS.jitter), plan.cycle * (1 + 2 * KNOBS.jitter)
        assert all(low - 1e-6 <= gap <= high + 1e-6 for gap in gaps), message.name
        if len(gaps) >= 10:
            assert statistics.median(gaps) == pytest.approx(plan.cycle, rel=0.05), message.name
            checked += 1
    assert from_dbc >= 10
    assert checked >= 100


def test_quiet_messages_are_silent_and_come_back(generated: Generated) -> None:
    sent = generated.by_message()
    silences = generated.summary.silences

    for silence in silences:
        stamps = [frame.timestamp for frame in sent[silence.channel, silence.frame_id]]
        assert not [t for t in stamps if (silence.last_before or START) < t < silence.first_after]
        after = [t for t in stamps if t >= silence.first_after]
        assert after[0] == silence.first_after
        assert len(after) >= 2, "the message comes back"
        if silence.late:
            assert stamps[0] == silence.first_after
            assert silence.first_after - START > 1.0
        else:
            assert silence.last_before in stamps
            # Longer than the agent's 1 s sampling period.
            assert silence.first_after - silence.last_before > 1.0
    quiet = [s for s in silences if not s.late]
    assert any(s.first_after - s.last_before > 10.0 for s in quiet)
    for channel in generated.databases:
        assert any(s.channel == channel and s.late for s in silences), channel
        assert any(s.channel == channel and not s.late for s in silences), channel


def test_short_frames_are_shorter_than_their_dbc_length(generated: Generated) -> None:
    short = set()
    for frame in generated.frames:
        message = generated.dbc_message(frame)
        if message is not None and len(frame.data) < message.length:
            short.add((frame.channel, frame.arbitration_id, frame.timestamp, len(frame.data)))
            if frame.is_fd:
                assert len(frame.data) in FD_LENGTHS

    promised = {
        (s.channel, s.frame_id, s.timestamp, s.length) for s in generated.summary.short_frames
    }
    assert short == promised
    assert len(short) >= 20
    assert {channel for channel, *_ in short} == {"can0", "can1", "can2"}


def test_frames_are_fd_and_extended_as_the_dbc_says(generated: Generated) -> None:
    short = {(s.channel, s.timestamp) for s in generated.summary.short_frames}
    kinds: Counter[str] = Counter()
    for frame in generated.frames:
        message = generated.dbc_message(frame)
        if message is None:
            continue
        assert frame.is_fd == is_fd(message), message.name
        assert frame.is_extended_id == message.is_extended_frame, message.name
        if (frame.channel, frame.timestamp) not in short:
            if frame.is_fd:
                assert len(frame.data) in FD_LENGTHS and len(frame.data) >= message.length
            else:
                assert len(frame.data) == message.length
        kinds["fd" if frame.is_fd else "classic"] += 1
        kinds["extended" if frame.is_extended_id else "standard"] += 1
    assert kinds["fd"] > 1000
    assert kinds["extended"] > 100


def test_multiplexed_messages_name_defined_pages_and_cycle_through_them(
    generated: Generated,
) -> None:
    short = {(s.channel, s.timestamp) for s in generated.summary.short_frames}
    checked = []
    for (channel, _), frames in generated.by_message().items():
        message = generated.dbc_message(frames[0])
        if message is None or not message.is_multiplexed():
            continue
        selector = next(s for s in message.signals if s.is_multiplexer)
        pages = defined_pages(message)
        seen = set()
        for frame in frames:
            if (channel, frame.timestamp) in short:
                continue
            # cantools raises on a selector value with no page, so this decodes the whole page.
            decoded = message.decode(frame.data, decode_choices=False)
            seen.add(decoded[selector.name])
        assert seen <= pages, message.name
        if len(frames) >= 3 * len(pages):
            assert seen == pages, message.name
        checked.append(message.name)
    assert sorted(checked) == sorted(p.name for p in generated.summary.multiplexed)
    assert {"VIN_01", "VIN_VIP_405HS"} <= set(checked)


# Selectors that cross a byte boundary, one Motorola (its MSB at bit 3, running on into byte 1)
# and one Intel, with pages that use their high bits.
CROSSING_DBC = """VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 1536 Motorola: 8 ECU
 SG_ Page M : 3|12@0+ (1,0) [0|4095] "" Vector__XXX
 SG_ Low m5 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Mid m2049 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ High m2748 : 16|8@1+ (1,0) [0|255] "" Vector__XXX

BO_ 1537 Intel: 8 ECU
 SG_ Page M : 4|10@1+ (1,0) [0|1023] "" Vector__XXX
 SG_ Low m3 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ High m1000 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
"""


def selector_values(database: Database, frames: Sequence[Frame]) -> dict[str, list[int]]:
    """Each multiplexed message's selector value per frame, as cantools decodes it."""
    values: dict[str, list[int]] = defaultdict(list)
    for frame in frames:
        try:
            message = database.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            continue
        if message.is_multiplexed():
            selector = next(s for s in message.signals if s.is_multiplexer)
            values[message.name].append(message.decode(frame.data)[selector.name])
    return values


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("crossing", {"Motorola": (5, 2049, 2748), "Intel": (3, 1000)}),
        # Cell_Bank_Number_1 : 55|3@0+, a real Motorola selector.
        ("gm_global_a_high_voltage_management.dbc", {"Battery_Module_1": tuple(range(8))}),
    ],
)
def test_selectors_step_through_the_pages_where_cantools_reads_them(
    tmp_path: Path, source: str, expected: dict[str, tuple[int, ...]]
) -> None:
    if source == "crossing":
        path = tmp_path / "crossing.dbc"
        path.write_text(CROSSING_DBC, encoding="utf-8")
        database = load_dbc([path]).database
    else:
        database = load_opendbc(source).database
    # Without holds or short frames every frame is fresh, so the pages follow in order.
    knobs = Knobs(short_probability=0.0, steady_fraction=0.0)

    traffic = generate_frames([Bus("can0", database)], duration=5.0, seed=3, knobs=knobs)

    values = selector_values(database, traffic.frames)
    for name, pages in expected.items():
        assert values[name] == [pages[k % len(pages)] for k in range(len(values[name]))]
        assert len(values[name]) > len(pages)


def test_some_messages_hold_their_payload_for_seconds(generated: Generated) -> None:
    sent = generated.by_message()
    steady = [plan for plan in generated.summary.messages if plan.steady]

    def longest_hold(frames: list[can.Message]) -> float:
        longest = 0.0
        held_since = frames[0].timestamp
        for previous, frame in itertools.pairwise(frames):
            if frame.data != previous.data:
                held_since = frame.timestamp
            longest = max(longest, frame.timestamp - held_since)
        return longest

    holds = [longest_hold(sent[plan.channel, plan.frame_id]) for plan in steady]
    assert len(steady) >= 0.2 * len(generated.summary.messages)
    # Most steady messages hold a payload for at least a second (short frames cut some holds).
    assert sum(hold >= KNOBS.steady_seconds[0] for hold in holds) >= 0.5 * len(steady)


def test_unknown_ids_are_noise_in_no_dbc(generated: Generated) -> None:
    counts = Counter((frame.channel, frame.arbitration_id) for frame in generated.frames)
    every_id = {m.frame_id for database in generated.databases.values() for m in database.messages}

    unknown = generated.summary.unknown_ids
    assert len(unknown) == 3 * KNOBS.unknown_ids_per_bus
    for noise in unknown:
        assert noise.arbitration_id not in every_id
        assert counts[noise.channel, noise.arbitration_id] == noise.frames > 0
    assert any(noise.is_extended_id for noise in unknown)


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    buses = [Bus(f"can{i}", load_opendbc(name).database) for i, name in enumerate(DBC_NAMES)]

    paths = []
    for name, seed in (("a.log", 5), ("b.log", 5), ("c.log", 6)):
        paths.append(tmp_path / name)
        generate_log(paths[-1], buses, duration=3.0, seed=seed)

    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_our_own_dbc_loader_feeds_the_generator(tmp_path: Path) -> None:
    database = load_dbc([write_small_dbc(tmp_path)]).database

    traffic = generate_frames([Bus("can0", database)], duration=3.0, seed=1)

    diag = traffic.summary.message("can0", 0x18FF0000)
    assert diag.is_extended_id
    assert traffic.summary.message("can0", 768).pages == (0, 1)
    ids = {frame.arbitration_id for frame in traffic.frames if frame.is_extended_id}
    assert diag.frame_id in ids


def test_jitter_that_could_reorder_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="keep their order"):
        Knobs(jitter=0.5)


def test_picker_spreads_across_makers_by_file_name() -> None:
    picked = pick_opendbc(20)
    names = [dbc.name for dbc in picked]

    assert len(set(names)) == 20
    assert len({dbc.maker for dbc in picked}) >= 15
    assert names[:6] == [
        "toyota_nodsu_pt_generated.dbc",
        "acura_ilx_2016_nidec.dbc",
        "hyundai_canfd_generated.dbc",
        "vw_mqb.dbc",
        "tesla_model3_party.dbc",
        "gm_global_a_lowspeed_1818125.dbc",
    ]
    assert all(dbc.database.messages for dbc in picked)
    assert [dbc.name for dbc in pick_opendbc(20)] == names


def test_picked_files_write_out_as_opendbc_ships_them(tmp_path: Path) -> None:
    dbc = load_opendbc("vw_mqb.dbc")

    path = dbc.write(tmp_path)

    assert path.name == "vw_mqb.dbc"
    assert path.read_bytes() == dbc.data
    assert not dbc.loads_strictly()  # opendbc's MQB file has overlapping signals


def test_cars_have_two_or_three_buses_in_pick_order() -> None:
    picked = pick_opendbc(7)

    cars = group_cars(picked)

    assert [len(car.dbcs) for car in cars] == [3, 2, 2]
    assert [dbc for car in cars for dbc in car.dbcs] == picked
    assert [bus.channel for bus in cars[0].buses] == ["can0", "can1", "can2"]
    assert cars[1].buses[0].database is picked[3].database
