"""Decode only what is sampled: latest payload per frame ID, decoded to raw integers at the tick.

A `FrameStore` belongs to one CAN source. For every frame the plan needs it keeps the newest
payload (per multiplexer page for multiplexed messages), which costs a dict write per frame. At a
sampling tick it decodes each needed payload once with cantools (`scaling=False`), giving exactly
the raw integers the wire format carries. Only messages with a `stats` signal, or a `change` or
`bounded` one (handed to a `FrameObserver` with the frame's time), are decoded per frame. Bad
frames are counted in the source's health and logged once per frame ID.

Real DBCs are not always tidy, and the values must still be cantools' own:
- A message whose signals overlap (most production DBCs have one) cannot be decoded by
  cantools as a whole; it is decoded signal by signal with cantools' own codec instead.
- A frame shorter than its DBC length is counted as short and kept: the signals that fit are
  decoded (cantools' `allow_truncated`), the others are not sampled from it, so no tick
  samples an older frame's value for them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import can
from cantools.database.can import Database, Message, Signal
from cantools.database.utils import create_encode_decode_formats, decode_data

from agent.sampling.frame_time import FRAME_TIME_MODES
from agent.sampling.plan import PlannedSignal
from agent.sources.health import SourceHealth

log = logging.getLogger(__name__)

Emit = Callable[[int, int | float], None]
EmitStats = Callable[[int, int | float, int | float, int | float, int], None]


class StatsAccumulator:
    """min, max, sum and count of `stats` signals between two takes, by plan index."""

    def __init__(self) -> None:
        self._stats: dict[int, list[int | float]] = {}

    def add(self, index: int, value: int | float) -> None:
        stats = self._stats.get(index)
        if stats is None:
            self._stats[index] = [value, value, value, 1]
        else:
            stats[0] = min(stats[0], value)
            stats[1] = max(stats[1], value)
            stats[2] += value
            stats[3] += 1

    def take(self, indices: Iterable[int], emit: EmitStats) -> None:
        """Emit and reset the statistics accumulated for these signals since the last take."""
        for index in indices:
            stats = self._stats.pop(index, None)
            if stats is not None:
                emit(index, stats[0], stats[1], stats[2], int(stats[3]))


class FrameObserver(Protocol):
    """Takes the raw value of a frame-time signal on every frame (agent/sampling/frame_time.py)."""

    def observe(self, index: int, time_ms: int, value: int | float) -> None: ...


class EventClock(Protocol):
    """Event time, moved on by the frames themselves (the `Sampler`)."""

    def advance(self, now: float) -> None:
        """Move event time to `now` (seconds), doing whatever falls due on the way."""

    def quiet_span(self) -> tuple[int, int]:
        """[low, high) in ms: a frame stamped inside it moves time forward and does nothing
        else, so its `advance` may wait for the newest such frame of a batch."""


MAX_IGNORED_IDS = 256
# A multiplexed page is keyed (frame_id, selector); a plain message by its frame_id.
PayloadKey = int | tuple[int, int]


def bit_extractor(signal: Signal) -> Callable[[bytes], int]:
    """Return a function reading `signal`'s raw unsigned value, as cantools would, cheaply."""
    length = signal.length
    mask = (1 << length) - 1
    if signal.byte_order == "little_endian":
        start = signal.start

        def little(data: bytes) -> int:
            return (int.from_bytes(data, "little") >> start) & mask

        return little
    # DBC numbers Motorola bits in a sawtooth: `start` is the MSB's index within its byte.
    msb = 8 * (signal.start // 8) + (7 - signal.start % 8)

    def big(data: bytes) -> int:
        return (int.from_bytes(data, "big") >> (8 * len(data) - msb - length)) & mask

    return big


def raw_reader(signal: Signal) -> Callable[[bytes], int] | None:
    """Return a function reading `signal`'s raw value exactly as cantools decodes it with
    `scaling=False` (two's complement for signed signals), or None for a float signal."""
    if signal.is_float:
        return None
    unsigned = bit_extractor(signal)
    if not signal.is_signed:
        return unsigned
    sign_bit, span = 1 << (signal.length - 1), 1 << signal.length

    def signed(data: bytes) -> int:
        value = unsigned(data)
        return value - span if value & sign_bit else value

    return signed


@dataclass
class _Page:
    """Signals read from one payload key at a tick."""

    key: PayloadKey
    signals: list[tuple[str, int]] = field(default_factory=list)
    # (reader, plan index) of every signal, read straight from a payload of the message's
    # length or longer, as `stats` signals are; None when one is a float, the message is
    # multiplexed or a signal lies past its end: cantools decodes the payload then.
    readers: tuple[tuple[Callable[[bytes], int], int], ...] | None = None


Decoder = Callable[[bytes], dict[str, int | float]]


def message_decoder(message: Message) -> Decoder:
    """Raw values of `message`'s signals in a payload, exactly as cantools decodes them
    (`scaling=False`; a short payload gives the signals that fit, a long one is cut).

    cantools packs a message's signals into one bit layout, which fails for overlapping
    signals: such a message is decoded signal by signal, through the same codec."""
    def whole(data: bytes) -> dict[str, int | float]:
        return message.decode(data, decode_choices=False, scaling=False,
                              allow_truncated=True, allow_excess=True)

    try:
        whole(bytes(message.length))
        return whole
    except Exception:  # cantools' unpacking of an overlapping layout, whatever its type
        pass
    length = message.length
    parts = []
    for signal in message.signals:
        try:
            formats = create_encode_decode_formats([signal], length)
            decode_data(bytes(length), length, [signal], formats, False, False, True, True)
        except Exception:  # a signal its message cannot hold (past its end): never decoded
            continue
        parts.append(([signal], formats))

    def by_signal(data: bytes) -> dict[str, int | float]:
        decoded: dict[str, int | float] = {}
        for signals, formats in parts:
            decoded.update(decode_data(data, length, signals, formats, False, False, True,
                                       True))
        # As cantools does: a multiplexed signal exists only on its multiplexer's pages.
        for signal in message.signals:
            selector = signal.multiplexer_signal
            if selector is not None and signal.name in decoded \
                    and decoded.get(selector) not in (signal.multiplexer_ids or ()):
                del decoded[signal.name]
        return decoded

    return by_signal


@dataclass
class _MessagePlan:
    message: Message
    decode: Decoder
    extended: bool
    length: int
    selector: Callable[[bytes], int] | None
    selector_bytes: int
    pages: frozenset[int]
    stats: dict[str, int] = field(default_factory=dict)
    # The `stats` signals read straight from the payload, (reader, plan index); None when one
    # is a float or the message is multiplexed: cantools decodes those. A message with
    # readers is plain: kept with a dict write and a bit read per `stats` signal.
    stats_readers: tuple[tuple[Callable[[bytes], int], int], ...] | None = None
    # `change` and `bounded` signals: decoded on every frame like `stats`, and read the same
    # way (frame_readers is set exactly when stats_readers is).
    frame_time: dict[str, int] = field(default_factory=dict)
    frame_readers: tuple[tuple[Callable[[bytes], int], int], ...] = ()


@dataclass(frozen=True)
class StoreStats:
    """What a source's store lets through and what it turned away, for `diag buses`."""

    filters: tuple[int, ...]  # the frame IDs asked of the bus
    unknown_ids: tuple[tuple[int, int], ...]  # (frame ID, frames) not in the plan, most first


class FrameStore:
    """The newest payload of every planned frame of one source, and per-frame stats."""

    def __init__(self, database: Database, signals: Sequence[PlannedSignal],
                 health: SourceHealth, observer: FrameObserver | None = None) -> None:
        self.health = health
        self._observer = observer
        self._messages: dict[int, _MessagePlan] = {}
        self._groups: dict[int, list[tuple[_MessagePlan, list[_Page]]]] = {}
        self._latest: dict[PayloadKey, tuple[float, bytes]] = {}
        self._stats = StatsAccumulator()
        self._warned: set[tuple[str, int]] = set()
        self.ignored_ids: Counter[int] = Counter()
        self._signals = tuple(signals)
        self._build(database, signals)

    @property
    def frame_ids(self) -> frozenset[int]:
        return frozenset(self._messages)

    def can_filters(self) -> list[dict[str, int | bool]]:
        """python-can filters for exactly the planned IDs (kernel filters on SocketCAN)."""
        return [{"can_id": frame_id, "can_mask": 0x1FFFFFFF if plan.extended else 0x7FF,
                 "extended": plan.extended}
                for frame_id, plan in sorted(self._messages.items())]

    def stats(self) -> StoreStats:
        return StoreStats(filters=tuple(sorted(self._messages)),
                          unknown_ids=tuple(self.ignored_ids.copy().most_common()))

    def _build(self, database: Database, signals: Sequence[PlannedSignal]) -> None:
        by_period: dict[int, dict[int, dict[PayloadKey, _Page]]] = {}
        for planned in signals:
            message = database.get_message_by_frame_id(planned.frame_id)
            plan = self._messages.get(planned.frame_id)
            if plan is None:
                plan = self._messages[planned.frame_id] = _plan_message(message)
            if planned.mode == "stats":
                plan.stats[planned.signal] = planned.index
                continue
            if planned.mode in FRAME_TIME_MODES:
                plan.frame_time[planned.signal] = planned.index
                continue
            signal = message.get_signal_by_name(planned.signal)
            pages = by_period.setdefault(planned.period_ms, {}).setdefault(planned.frame_id, {})
            selectors = signal.multiplexer_ids if plan.selector else None
            for key in ([(planned.frame_id, s) for s in selectors] if selectors
                        else [planned.frame_id]):
                pages.setdefault(key, _Page(key)).signals.append((planned.signal, planned.index))
        self._groups = {
            period: [(self._messages[frame_id], list(pages.values()))
                     for frame_id, pages in messages.items()]
            for period, messages in by_period.items()
        }
        for groups in self._groups.values():
            for plan, pages in groups:
                for page in pages:
                    page.readers = _readers(plan, page.signals)
        for plan in self._messages.values():
            per_frame = {**plan.stats, **plan.frame_time}
            readers = _readers(plan, list(per_frame.items()))
            if readers is not None:
                plan.stats_readers = readers[:len(plan.stats)]
                plan.frame_readers = readers[len(plan.stats):]

    def accept(self, frame: can.Message) -> None:
        """Keep a received frame if the plan needs it; count it either way."""
        health = self.health
        health.frames += 1
        health.last_frame_time = frame.timestamp
        health.last_received = time.monotonic()
        self._keep(frame)

    def accept_all(self, frames: Sequence[can.Message], clock: EventClock) -> None:
        """`accept` each frame after moving event time to it.

        The ingest hot path: one call per received batch. A frame inside the clock's quiet
        span only moves time on, so the clock is called once a batch for those; a planned,
        plain frame (most of them) costs a dict write and a bit read per `stats` signal."""
        health = self.health
        health.frames += len(frames)
        health.last_frame_time = frames[-1].timestamp
        health.last_received = time.monotonic()
        plans, latest, add = self._messages, self._latest, self._stats.add
        observe = self._observe
        advance = clock.advance
        low, high = clock.quiet_span()
        newest = 0.0
        for frame in frames:
            timestamp = frame.timestamp
            # The clock works in whole ms (int() of this product): exact against its bounds.
            if low <= timestamp * 1000 < high:
                if timestamp > newest:
                    newest = timestamp
            else:
                if newest:  # what those before it would have done, frame by frame
                    advance(newest)
                    newest = 0.0
                advance(timestamp)
                low, high = clock.quiet_span()
            plan = plans.get(frame.arbitration_id)
            if plan is None or plan.stats_readers is None or frame.is_error_frame \
                    or frame.is_remote_frame or frame.is_extended_id != plan.extended \
                    or len(frame.data) < plan.length:
                self._keep(frame)
                continue
            data = bytes(frame.data)
            latest[frame.arbitration_id] = (timestamp, data)
            for read, index in plan.stats_readers:
                add(index, read(data))
            if plan.frame_readers:
                time_ms = int(timestamp * 1000)
                for read, index in plan.frame_readers:
                    observe(index, time_ms, read(data))
        if newest:
            advance(newest)

    def _keep(self, frame: can.Message) -> None:
        health = self.health
        if frame.is_error_frame:
            health.error_frames += 1
            return
        plan = self._messages.get(frame.arbitration_id)
        if plan is None or frame.is_remote_frame or frame.is_extended_id != plan.extended:
            health.ignored += 1
            if len(self.ignored_ids) < MAX_IGNORED_IDS or frame.arbitration_id in self.ignored_ids:
                self.ignored_ids[frame.arbitration_id] += 1
            return
        data = frame.data
        if len(data) < plan.length:
            health.short_frames += 1
            self._warn_once("short", frame.arbitration_id,
                            f"frame 0x{frame.arbitration_id:X} ({plan.message.name}) has "
                            f"{len(data)} bytes but the DBC says {plan.length}: only the "
                            "signals that fit are decoded; check the sender or the DBC length")
            if plan.selector is not None and len(data) < plan.selector_bytes:
                return  # no page to keep it under
        payload = (frame.timestamp, bytes(data))
        if plan.selector is not None:
            selector = plan.selector(data)
            if selector not in plan.pages:
                health.decode_errors += 1
                self._warn_once("mux", frame.arbitration_id,
                                f"frame 0x{frame.arbitration_id:X} ({plan.message.name}) has "
                                f"multiplexer value {selector}, which the DBC does not define")
                return
            self._latest[(frame.arbitration_id, selector)] = payload
        self._latest[frame.arbitration_id] = payload
        if plan.stats or plan.frame_time:
            self._accumulate(plan, payload[1], int(frame.timestamp * 1000))

    def _observe(self, index: int, time_ms: int, value: int | float) -> None:
        if self._observer is not None:
            self._observer.observe(index, time_ms, value)

    def _accumulate(self, plan: _MessagePlan, data: bytes, time_ms: int) -> None:
        if plan.stats_readers is not None and len(data) >= plan.length:
            for read, index in plan.stats_readers:
                self._stats.add(index, read(data))
            for read, index in plan.frame_readers:
                self._observe(index, time_ms, read(data))
            return
        decoded = self._decode(plan, data)
        if decoded is None:
            return
        for name, index in plan.stats.items():
            value = decoded.get(name)
            if value is None:
                continue
            self._stats.add(index, value)
        for name, index in plan.frame_time.items():
            value = decoded.get(name)
            if value is not None:
                self._observe(index, time_ms, value)

    def sample_last(self, period_ms: int, at: float, stale_after: float, emit: Emit) -> None:
        """Emit the raw value of every `last` signal of this period from payloads before `at`."""
        latest = self._latest
        for plan, pages in self._groups.get(period_ms, ()):
            for page in pages:
                payload = latest.get(page.key)
                if payload is None or at - payload[0] > stale_after:
                    continue
                if page.readers is not None and len(payload[1]) >= plan.length:
                    # A whole payload of a plain message: the bits straight, no cantools
                    # decode of the whole message (~14 % of the agent's CPU on full buses).
                    data = payload[1]
                    for read, index in page.readers:
                        emit(index, read(data))
                    continue
                decoded = self._decode(plan, payload[1])
                if decoded is None:
                    continue
                for name, index in page.signals:
                    value = decoded.get(name)
                    if value is not None:
                        emit(index, value)

    def take_stats(self, indices: Iterable[int], emit: EmitStats) -> None:
        """Emit and reset the statistics accumulated for these signals since the last take."""
        self._stats.take(indices, emit)

    def current_values(self) -> list[tuple[PlannedSignal, int | float, float]]:
        """(signal, raw value, frame timestamp) of every planned signal received so far."""
        values = []
        for planned in self._signals:
            plan = self._messages[planned.frame_id]
            keys: list[PayloadKey] = [planned.frame_id]
            if plan.selector is not None:
                signal = plan.message.get_signal_by_name(planned.signal)
                if signal.multiplexer_ids:
                    keys = [(planned.frame_id, page) for page in signal.multiplexer_ids]
            for key in keys:
                payload = self._latest.get(key)
                decoded = self._decode(plan, payload[1]) if payload else None
                if decoded is not None and planned.signal in decoded:
                    values.append((planned, decoded[planned.signal], payload[0]))
                    break
        return values

    def _decode(self, plan: _MessagePlan, data: bytes) -> dict[str, int | float] | None:
        try:
            return plan.decode(data)
        except Exception as exc:  # cantools raises several types on payloads it cannot read
            self.health.decode_errors += 1
            self._warn_once("decode", plan.message.frame_id,
                            f"cannot decode 0x{plan.message.frame_id:X} "
                            f"({plan.message.name}): {exc}")
            return None

    def _warn_once(self, kind: str, frame_id: int, text: str) -> None:
        if (kind, frame_id) not in self._warned:
            self._warned.add((kind, frame_id))
            log.warning("%s (further ones are counted, not logged)", text)


def _plan_message(message: Message) -> _MessagePlan:
    selector_signal = next((s for s in message.signals if s.is_multiplexer), None)
    pages: frozenset[int] = frozenset()
    if selector_signal is not None:
        pages = frozenset(v for s in message.signals for v in (s.multiplexer_ids or ()))
    return _MessagePlan(
        message=message,
        decode=message_decoder(message),
        extended=message.is_extended_frame,
        length=message.length,
        selector=bit_extractor(selector_signal) if selector_signal is not None else None,
        selector_bytes=0 if selector_signal is None else _bytes_holding(selector_signal),
        pages=pages,
    )


def _readers(plan: _MessagePlan, signals: Sequence[tuple[str, int]]
             ) -> tuple[tuple[Callable[[bytes], int], int], ...] | None:
    """(raw reader, plan index) of each (name, index) in `signals`, or None unless every one
    can be read straight from a payload of the message's length: integer signals of a plain
    message that lie inside it (a signal past its message's end, a DBC mistake, takes
    cantools' way, which skips it; a multiplexed message is read page by page by cantools)."""
    if plan.selector is not None:
        return None
    found = [(plan.message.get_signal_by_name(name), index) for name, index in signals]
    readers = tuple((raw_reader(signal), index) for signal, index in found)
    if any(read is None for read, _ in readers) \
            or any(_bytes_holding(signal) > plan.length for signal, _ in found):
        return None
    return readers  # type: ignore[return-value]


def _bytes_holding(signal: Signal) -> int:
    """How many leading bytes of a payload hold all of `signal`."""
    if signal.byte_order == "little_endian":
        last_bit = signal.start + signal.length - 1
    else:
        last_bit = 8 * (signal.start // 8) + (7 - signal.start % 8) + signal.length - 1
    return last_bit // 8 + 1
