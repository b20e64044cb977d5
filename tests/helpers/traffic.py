"""CAN traffic that looks like real buses, for differential tests of the decoder and sampler.

Our example drive is one well-behaved bus. Real cars break decoders in other ways, and this
module makes those ways reproducible from a seed:

- every message of every DBC at its cycle time (the DBC's GenMsgCycleTime; where a DBC has none,
  one of `Knobs.fallback_cycles_ms` picked per message), with a random phase and per-frame jitter;
- several buses interleaved by timestamp in one candump log, each frame keeping its channel;
- payloads of random bytes (every bit pattern of signed, big-endian and float signals, NaN and
  infinities included), some messages holding one payload for seconds at a time;
- multiplexed messages whose selector always names a defined page, cycling through the pages;
- extended IDs and CAN FD frames where the DBC says so (a DBC length above 8 means FD);
- messages that go quiet for longer than a sampling period (sometimes over 10 s) and come back,
  and messages that appear only after the start;
- now and then a frame shorter than its DBC length, and a few IDs that no DBC defines.

`generate_frames` is pure; `write_log` is the I/O; `generate_log` does both. The summary they
return is what the generator promised, for tests to check against the log they read back.

`pick_opendbc` chooses real DBCs from the `opendbc` package across makers, and `group_cars`
puts them on the buses of multi-bus cars.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import can
import cantools
from cantools.database.can import Database, Message, Signal

# Payload lengths a CAN FD frame can have (the DLC codes 0-15).
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


@dataclass(frozen=True)
class Bus:
    """One CAN bus of the generated log: its channel name and the DBC that describes it."""

    channel: str
    database: Database


@dataclass(frozen=True)
class Knobs:
    """How adversarial the traffic is; the defaults are what a real car tends to do."""

    # Each frame lands within ±jitter * cycle of its slot. Below 0.5 one message's frames can
    # never swap places, which real buses also guarantee (one ECU sends them in order).
    jitter: float = 0.1
    # Share of the messages (cycle up to 1 s) that go quiet once, and that start late (after
    # `quiet_seconds`).
    quiet_fraction: float = 0.1
    late_fraction: float = 0.05
    # A silence is longer than the 1 s sampling period; a third of them longer than 10 s
    # (when the log is long enough), which is past any sane staleness limit.
    quiet_seconds: tuple[float, float] = (1.5, 6.0)
    long_quiet_seconds: tuple[float, float] = (10.5, 14.0)
    # Share of the messages that hold one payload for stretches of `steady_seconds`.
    steady_fraction: float = 0.3
    steady_seconds: tuple[float, float] = (1.0, 5.0)
    # Chance that a frame is cut shorter than its DBC length.
    short_probability: float = 0.003
    # IDs that no DBC on any bus defines, per bus: every other one extended.
    unknown_ids_per_bus: int = 2
    # Most opendbc files carry no cycle times; such a message gets one of these (ms), picked
    # from the seed, so a log has both fast messages and ones slower than the sampling period.
    fallback_cycles_ms: tuple[int, ...] = (10, 20, 50, 100, 100, 100, 200, 500, 1000)
    # Cycle times outside this range (0 means "on event" in many DBCs) are clamped into it.
    min_cycle_ms: int = 10
    max_cycle_ms: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 0.5:
            raise ValueError("jitter must be in [0, 0.5) so one message's frames keep their order")
        if not self.fallback_cycles_ms:
            raise ValueError("fallback_cycles_ms needs at least one cycle time")


class Frame(NamedTuple):
    """One frame of the log. A tuple (not a dataclass) because a log holds ~10^5 of them and
    they are sorted by timestamp, then channel, as they are."""

    timestamp: float
    channel: str
    arbitration_id: int
    is_extended_id: bool
    is_fd: bool
    data: bytes

    def to_message(self) -> can.Message:
        return can.Message(
            timestamp=self.timestamp,
            channel=self.channel,
            arbitration_id=self.arbitration_id,
            is_extended_id=self.is_extended_id,
            is_fd=self.is_fd,
            data=self.data,
        )


@dataclass(frozen=True)
class MessagePlan:
    """What one DBC message on one bus was given: cycle, frame shape, and how many were sent."""

    channel: str
    frame_id: int
    name: str
    is_extended_id: bool
    is_fd: bool
    dbc_length: int
    length: int  # of full frames on the wire: the DBC length, raised to a valid FD length
    cycle: float  # seconds
    cycle_from_dbc: bool
    frames: int
    pages: tuple[int, ...]  # defined selector values of a multiplexed message, else ()
    steady: bool


@dataclass(frozen=True)
class Silence:
    """A message sent no frame strictly between `last_before` and `first_after`.

    `last_before` is None for a message that first appears at `first_after`."""

    channel: str
    frame_id: int
    name: str
    last_before: float | None
    first_after: float

    @property
    def late(self) -> bool:
        return self.last_before is None


@dataclass(frozen=True)
class ShortFrame:
    """A frame cut shorter than its DBC length."""

    channel: str
    frame_id: int
    timestamp: float
    length: int
    dbc_length: int


@dataclass(frozen=True)
class UnknownId:
    """Noise: an ID that no DBC of any bus defines."""

    channel: str
    arbitration_id: int
    is_extended_id: bool
    frames: int


@dataclass(frozen=True)
class TrafficSummary:
    """What the generator promised about the log, for tests to assert on."""

    start: float
    end: float
    frames_per_channel: dict[str, int]
    messages: tuple[MessagePlan, ...]
    silences: tuple[Silence, ...]
    short_frames: tuple[ShortFrame, ...]
    unknown_ids: tuple[UnknownId, ...]

    @property
    def frames(self) -> int:
        return sum(self.frames_per_channel.values())

    @property
    def multiplexed(self) -> tuple[MessagePlan, ...]:
        return tuple(plan for plan in self.messages if plan.pages)

    def message(self, channel: str, frame_id: int) -> MessagePlan:
        for plan in self.messages:
            if plan.channel == channel and plan.frame_id == frame_id:
                return plan
        raise KeyError(f"no message {frame_id:#x} on {channel}")


@dataclass(frozen=True)
class Traffic:
    frames: tuple[Frame, ...]
    summary: TrafficSummary


def generate_frames(
    buses: Sequence[Bus],
    duration: float = 20.0,
    start: float = 1_700_000_000.0,
    seed: int = 0,
    knobs: Knobs = Knobs(),  # frozen, so one shared default is safe
) -> Traffic:
    """The frames of every bus over [start, start + duration), sorted by timestamp."""
    if len({bus.channel for bus in buses}) != len(buses):
        raise ValueError("every bus needs its own channel name")
    end = start + duration
    defined = {message.frame_id for bus in buses for message in bus.database.messages}
    frames: list[Frame] = []
    plans: list[MessagePlan] = []
    silences: list[Silence] = []
    shorts: list[ShortFrame] = []
    unknown: list[UnknownId] = []
    for bus in buses:
        bus_rng = random.Random(f"{seed}:{bus.channel}")
        messages = _messages_of(bus.database)
        cycles = {
            key: _cycle(message, knobs, random.Random(f"{seed}:{bus.channel}:{key}:cycle"))
            for key, message in messages.items()
        }
        # Only messages of a cycle up to 1 s go quiet: a silence must outlast several frames.
        eligible = [key for key in messages if cycles[key][0] <= 1.0]
        quiet = _sample(bus_rng, eligible, knobs.quiet_fraction)
        late = _sample(bus_rng, [key for key in eligible if key not in quiet], knobs.late_fraction)
        steady = set(_sample(bus_rng, list(messages), knobs.steady_fraction))
        for key, message in messages.items():
            # One random stream per message: a message added to a DBC leaves the others' alone.
            rng = random.Random(f"{seed}:{bus.channel}:{key}")
            cycle, from_dbc = cycles[key]
            times = _slots(rng, start, end, cycle, knobs.jitter)
            silence = None
            if key in quiet:
                times, silence = _go_quiet(rng, times, cycle, duration, knobs)
            elif key in late:
                times, silence = _start_late(rng, times, start, knobs)
            if silence is not None:
                silences.append(_silence(bus.channel, message, silence))
            plan = _plan(bus.channel, message, cycle, from_dbc, len(times), key in steady)
            plans.append(plan)
            selectors = _selectors(message, plan.length)
            frames.extend(_frames(rng, plan, selectors, times, knobs, shorts))
        for frame_id in _unknown_ids(bus_rng, defined, knobs.unknown_ids_per_bus):
            rng = random.Random(f"{seed}:{bus.channel}:noise:{frame_id}")
            noise = _noise(rng, bus.channel, frame_id, start, end, knobs.jitter)
            frames.extend(noise)
            unknown.append(UnknownId(bus.channel, frame_id, frame_id > 0x7FF, len(noise)))
            defined.add(frame_id)
    frames.sort()
    per_channel = {bus.channel: 0 for bus in buses}
    for frame in frames:
        per_channel[frame.channel] += 1
    summary = TrafficSummary(
        start=start,
        end=end,
        frames_per_channel=per_channel,
        messages=tuple(plans),
        silences=tuple(silences),
        short_frames=tuple(sorted(shorts, key=lambda short: short.timestamp)),
        unknown_ids=tuple(unknown),
    )
    return Traffic(frames=tuple(frames), summary=summary)


def write_log(path: Path, frames: Iterable[Frame]) -> None:
    """Write frames as a candump log (`can.Logger` picks the format from the suffix: `.log`)."""
    logger = can.Logger(path)
    try:
        for frame in frames:
            logger.on_message_received(frame.to_message())
    finally:
        logger.stop()


def generate_log(
    path: Path,
    buses: Sequence[Bus],
    duration: float = 20.0,
    start: float = 1_700_000_000.0,
    seed: int = 0,
    knobs: Knobs = Knobs(),  # frozen, so one shared default is safe
) -> TrafficSummary:
    """Generate the traffic of `buses` into a candump log at `path`; return what it holds."""
    traffic = generate_frames(buses, duration=duration, start=start, seed=seed, knobs=knobs)
    write_log(path, traffic.frames)
    return traffic.summary


def _messages_of(database: Database) -> dict[str, Message]:
    """The database's messages by a stable key, one per frame ID (the last, as cantools decodes
    by it), without those no CAN frame can carry."""
    by_id: dict[int, Message] = {}
    for message in database.messages:
        if message.length <= 64:
            by_id[message.frame_id] = message
    return {f"{frame_id:x}": by_id[frame_id] for frame_id in sorted(by_id)}


def _cycle(message: Message, knobs: Knobs, rng: random.Random) -> tuple[float, bool]:
    """The message's cycle in seconds, and whether the DBC gave it."""
    if message.cycle_time:
        cycle_ms = min(max(message.cycle_time, knobs.min_cycle_ms), knobs.max_cycle_ms)
        return cycle_ms / 1000, True
    return rng.choice(knobs.fallback_cycles_ms) / 1000, False


def _sample(rng: random.Random, keys: list[str], fraction: float) -> list[str]:
    """`fraction` of the keys, at least one whenever the fraction is above zero."""
    if fraction <= 0 or not keys:
        return []
    return rng.sample(keys, max(1, min(len(keys), round(fraction * len(keys)))))


def _slots(
    rng: random.Random, start: float, end: float, cycle: float, jitter: float
) -> list[float]:
    """Send times: a random phase, then one frame per cycle, each moved by up to ±jitter * cycle.

    Rounded to the microsecond a candump log keeps, so the summary matches the log exactly."""
    phase = rng.uniform(0, cycle)
    count = int((end - start - phase) / cycle) + 1
    spread = jitter * cycle
    times = (
        round(start + phase + k * cycle + rng.uniform(-spread, spread), 6) for k in range(count)
    )
    return [t for t in times if start <= t < end]


def _go_quiet(
    rng: random.Random, times: list[float], cycle: float, duration: float, knobs: Knobs
) -> tuple[list[float], tuple[float | None, float] | None]:
    """Drop a run of frames so the gap is a silence; at least two frames come back after it."""
    low, high = knobs.long_quiet_seconds
    wanted = []
    if rng.random() < 1 / 3 and duration >= high + 4 * cycle:
        wanted.append(rng.uniform(low, high))
    wanted.append(rng.uniform(*knobs.quiet_seconds))
    for gap in wanted:
        # Index i is the last frame before the silence; j the first after it.
        candidates = [i for i in range(1, len(times) - 2) if times[i] + gap <= times[-3]]
        if candidates:
            i = rng.choice(candidates)
            j = bisect.bisect_left(times, times[i] + gap)
            return times[: i + 1] + times[j:], (times[i], times[j])
    return times, None


def _start_late(
    rng: random.Random, times: list[float], start: float, knobs: Knobs
) -> tuple[list[float], tuple[float | None, float] | None]:
    """Drop the first frames, so the message appears a silence after the start."""
    j = bisect.bisect_left(times, start + rng.uniform(*knobs.quiet_seconds))
    if j >= len(times) - 2:
        return times, None
    return times[j:], (None, times[j])


def _silence(channel: str, message: Message, span: tuple[float | None, float]) -> Silence:
    return Silence(channel, message.frame_id, message.name, span[0], span[1])


def _plan(
    channel: str, message: Message, cycle: float, from_dbc: bool, frames: int, steady: bool
) -> MessagePlan:
    is_fd = bool(message.is_fd) or message.length > 8
    length = message.length
    if is_fd:
        length = next(n for n in FD_LENGTHS if n >= message.length)
    return MessagePlan(
        channel=channel,
        frame_id=message.frame_id,
        name=message.name,
        is_extended_id=message.is_extended_frame,
        is_fd=is_fd,
        dbc_length=message.length,
        length=length,
        cycle=cycle,
        cycle_from_dbc=from_dbc,
        frames=frames,
        pages=_pages(message),
        steady=steady,
    )


def _pages(message: Message) -> tuple[int, ...]:
    """The defined values of the message's top-level multiplexer, or () if it has none."""
    top = [s for s in message.signals if s.is_multiplexer and s.multiplexer_signal is None]
    if not top:
        return ()
    return _pages_of(message, top[0])


def _pages_of(message: Message, selector: Signal) -> tuple[int, ...]:
    return tuple(
        sorted(
            {
                page
                for signal in message.signals
                if signal.multiplexer_signal == selector.name
                for page in signal.multiplexer_ids or ()
            }
        )
    )


@dataclass(frozen=True)
class _Selector:
    """Where one multiplexer's bits sit in the payload (LSB first) and the pages it may name."""

    bits: tuple[tuple[int, int], ...]  # (byte index, bit mask)
    pages: tuple[int, ...]

    def write(self, payload: bytearray, counter: int) -> None:
        raw = self.pages[counter % len(self.pages)]
        for index, (byte, mask) in enumerate(self.bits):
            if raw >> index & 1:
                payload[byte] |= mask
            else:
                payload[byte] &= ~mask & 0xFF


def _selectors(message: Message, length: int) -> list[_Selector]:
    """Every multiplexer with pages, nested ones first so the top-level selector, written last,
    wins wherever their bits overlap."""
    found = []
    for signal in message.signals:
        if not signal.is_multiplexer:
            continue
        pages = _pages_of(message, signal)
        if pages:
            bits = tuple(
                (position // 8, 1 << position % 8)
                for position in _bit_positions(signal)
                if position // 8 < length
            )
            nested = signal.multiplexer_signal is not None
            found.append((not nested, _Selector(bits, pages)))
    return [selector for _, selector in sorted(found, key=lambda pair: pair[0])]


def _bit_positions(signal: Signal) -> list[int]:
    """The signal's bits as byte * 8 + bit-in-byte, least significant first (DBC numbering:
    an Intel signal starts at its LSB; a Motorola one at its MSB and runs down, then into the
    next byte's bit 7)."""
    if signal.byte_order == "little_endian":
        return [signal.start + i for i in range(signal.length)]
    positions = []
    position = signal.start
    for _ in range(signal.length):
        positions.append(position)
        position = position + 15 if position % 8 == 0 else position - 1
    return positions[::-1]


def _frames(
    rng: random.Random,
    plan: MessagePlan,
    selectors: Sequence[_Selector],
    times: list[float],
    knobs: Knobs,
    shorts: list[ShortFrame],
) -> list[Frame]:
    """The frames of one message at `times`: fresh random payloads, or a held one in a steady
    stretch; the selector set to the next page each time a payload is made."""
    shorter = [n for n in (FD_LENGTHS if plan.is_fd else range(9)) if n < plan.dbc_length]
    frames = []
    payload = b""
    held_until = -1.0
    fresh = 0
    for t in times:
        if t >= held_until:
            data = bytearray(rng.randbytes(plan.length))
            for selector in selectors:
                selector.write(data, fresh)
            fresh += 1
            payload = bytes(data)
            # A steady message starts holding about once every two seconds of fresh payloads.
            if plan.steady and rng.random() < min(1.0, plan.cycle / 2.0):
                held_until = t + rng.uniform(*knobs.steady_seconds)
        sent = payload
        if shorter and rng.random() < knobs.short_probability:
            sent = payload[: rng.choice(shorter)]
            shorts.append(ShortFrame(plan.channel, plan.frame_id, t, len(sent), plan.dbc_length))
        frames.append(Frame(t, plan.channel, plan.frame_id, plan.is_extended_id, plan.is_fd, sent))
    return frames


def _noise(
    rng: random.Random, channel: str, frame_id: int, start: float, end: float, jitter: float
) -> list[Frame]:
    """Frames of an ID no DBC defines: a slow cycle, any classic length, random bytes."""
    times = _slots(rng, start, end, rng.choice((0.2, 0.5, 1.0)), jitter)
    length = rng.randrange(0, 9)
    extended = frame_id > 0x7FF
    return [Frame(t, channel, frame_id, extended, False, rng.randbytes(length)) for t in times]


def _unknown_ids(rng: random.Random, defined: set[int], count: int) -> list[int]:
    """`count` IDs in no DBC: standard ones, every other one a 29-bit extended ID."""
    found: list[int] = []
    while len(found) < count:
        limit = 0x1FFFFFFF if len(found) % 2 else 0x7FF
        low = 0x800 if limit > 0x7FF else 1
        frame_id = rng.randint(low, limit)
        if frame_id not in defined and frame_id not in found:
            found.append(frame_id)
    return found


# --- Real DBCs from opendbc ---------------------------------------------------------------------

# Makers in the order the picker visits them, each with file-name prefixes in order of
# preference: the first is the DBC most cars of that maker on the road use, or the one with the
# most to test (FD for Hyundai, 29-bit IDs for GM); the rest follow by name.
MAKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Toyota", ("toyota_nodsu_pt", "toyota_")),
    ("Honda", ("honda_", "acura_")),
    ("Hyundai/Kia", ("hyundai_canfd", "hyundai_", "kia_")),
    ("VW", ("vw_mqb", "vw_")),
    ("Tesla", ("tesla_model3", "tesla_")),
    ("GM", ("gm_global_a_lowspeed", "gm_", "cadillac_")),
    ("Ford", ("ford_", "FORD_")),
    ("Nissan", ("nissan_",)),
    ("Subaru", ("subaru_global", "subaru_")),
    ("Mazda", ("mazda_",)),
    ("Chrysler", ("chrysler_", "fca_")),
    ("BMW", ("bmw_",)),
    ("Mercedes", ("mercedes_",)),
    ("Volvo", ("volvo_",)),
    ("Rivian", ("rivian_",)),
    ("PSA", ("psa_",)),
    ("Opel", ("opel_",)),
    ("GWM", ("gwm_",)),
    ("Hongqi", ("hongqi_",)),
    ("Luxgen", ("luxgen_",)),
)


@dataclass(frozen=True, eq=False)
class OpendbcFile:
    """One DBC from opendbc, parsed by cantools (strict=False, as real files need)."""

    name: str  # file name as opendbc's repository has it, e.g. "toyota_nodsu_pt_generated.dbc"
    maker: str
    data: bytes  # as shipped (generated files as opendbc's generator writes them: UTF-8)
    database: Database

    def write(self, directory: Path) -> Path:
        path = directory / self.name
        path.write_bytes(self.data)
        return path

    def loads_strictly(self) -> bool:
        """Whether cantools also parses it with strict=True (overlapping signals, signals past
        the message end and such make strict parsing fail)."""
        return _parses(self.name, strict=True) is not None


def opendbc_names() -> list[str]:
    """Every DBC file name opendbc offers: the shipped files and the generated ones."""
    return sorted(_opendbc_sources())


def load_opendbc(name: str) -> OpendbcFile:
    """One opendbc DBC by file name; ValueError if cantools cannot parse it."""
    database = _parses(name, strict=False)
    if database is None:
        raise ValueError(f"cantools cannot parse opendbc's {name}")
    return OpendbcFile(name, _maker(name) or "", _opendbc_sources()[name], database)


def pick_opendbc(count: int = 20) -> list[OpendbcFile]:
    """`count` DBCs across makers: one per maker in MAKERS order, then a second round, and so
    on; within a maker by preferred prefix, then by name. Files cantools cannot parse are
    skipped. The same opendbc version always gives the same list."""
    queues = []
    for maker, prefixes in MAKERS:
        names = [name for name in opendbc_names() if _maker(name) == maker]
        names.sort(key=lambda name: (_preference(name, prefixes), name))
        queues.append(names)
    picked: list[OpendbcFile] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            while queue and len(picked) < count:
                name = queue.pop(0)
                if _parses(name, strict=False) is not None:
                    picked.append(load_opendbc(name))
                    break
    if len(picked) < count:
        raise ValueError(f"opendbc has only {len(picked)} DBCs that cantools parses")
    return picked


@dataclass(frozen=True)
class Car:
    """Several buses of one vehicle, each with its own DBC."""

    name: str
    dbcs: tuple[OpendbcFile, ...]

    @property
    def buses(self) -> tuple[Bus, ...]:
        return tuple(Bus(f"can{i}", dbc.database) for i, dbc in enumerate(self.dbcs))


def group_cars(dbcs: Sequence[OpendbcFile], buses_per_car: int = 3) -> list[Car]:
    """Consecutive DBCs become the buses of one car, `buses_per_car` each, never fewer than two.

    In pick order a car's buses come from different makers, so one frame ID often means
    different messages on its buses, which a decoder has to keep apart per bus."""
    if buses_per_car < 2 or len(dbcs) < 2:
        raise ValueError("a car needs at least two buses")
    sizes = [buses_per_car] * (len(dbcs) // buses_per_car)
    left = len(dbcs) % buses_per_car
    if left:
        sizes.append(left)
    # A single bus left over takes one from the car before it.
    if sizes[-1] == 1:
        sizes[-1] = 2
        sizes[-2] -= 1
    cars = []
    offset = 0
    for size in sizes:
        chunk = tuple(dbcs[offset : offset + size])
        offset += size
        cars.append(Car("+".join(dbc.name.removesuffix(".dbc") for dbc in chunk), chunk))
    return cars


def _maker(name: str) -> str | None:
    for maker, prefixes in MAKERS:
        if name.startswith(prefixes):
            return maker
    return None


def _preference(name: str, prefixes: tuple[str, ...]) -> int:
    return next(i for i, prefix in enumerate(prefixes) if name.startswith(prefix))


@functools.cache
def _opendbc_sources() -> dict[str, bytes]:
    import opendbc
    from opendbc.dbc.generator.generator import generate_all

    # The PyPI package ships the generated DBCs (Honda, Toyota pt, Subaru, ...) as templates
    # with CM_ "IMPORT ..." lines; its generator assembles them in memory, named as in the repo.
    directory = Path(opendbc.__file__).parent / "dbc"
    sources = {path.name: path.read_bytes() for path in directory.glob("*.dbc")}
    for stem, text in generate_all().items():
        sources[f"{stem}.dbc"] = text.encode("utf-8")
    return sources


@functools.cache
def _parses(name: str, strict: bool) -> Database | None:
    data = _opendbc_sources()[name]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252")
    try:
        return cantools.database.load_string(text, "dbc", strict=strict)
    except Exception:  # cantools raises many types for files it rejects
        return None
