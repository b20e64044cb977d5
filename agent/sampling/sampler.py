"""Sampling on event time: ticks at whole multiples of each period, windows at multiples of the
window length, driven by the timestamps of the data itself.

Semantics (docs/wire-format.md repeats them for the backend):
- a `last` sample labelled T is the newest value received strictly before T;
- a `stats` sample labelled T summarises the values received in [T, T + period);
- a window [t0, t1) holds the samples labelled t0 <= T < t1 (stats of a partial first period may
  carry a label just before t0) and is sealed as soon as time reaches t1.
Time comes from frame timestamps (`advance` before each frame) and, when the bus is quiet, from a
heartbeat. A jump of more than two windows either way (an RTC set by NTP, a replay that loops)
seals the open window and starts afresh at the new time instead of ticking through the gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.decoding.frames import Emit, EmitStats
from agent.sampling.plan import SamplingPlan
from agent.sampling.ring import BYTES_PER_RECORD, Field, Ring

log = logging.getLogger(__name__)


def records_per_window(plan: SamplingPlan, window_ms: int) -> int:
    """Ring records the plan writes in one window: a value 1, a stats sample 4."""
    return sum(-(-window_ms // s.period_ms) * (4 if s.mode == "stats" else 1)
               for s in plan.signals)


def check_ring_size(ring: Ring, plan: SamplingPlan, window_ms: int) -> None:
    """Warn when a window's records would fill more than half of the ring."""
    needed = records_per_window(plan, window_ms)
    if 2 * needed > ring.capacity:
        log.warning("the sampling plan writes %d ring records per %.0f s window; the ring "
                    "holds %d: raise [ring] memory_mb to at least %.1f or records will be lost",
                    needed, window_ms / 1000, ring.capacity,
                    2 * needed * BYTES_PER_RECORD / 2**20)


class SignalReader(Protocol):
    """What the sampler needs from a source's decoded state (a `FrameStore` for CAN)."""

    def sample_last(self, period_ms: int, at: float, stale_after: float, emit: Emit) -> None: ...

    def take_stats(self, indices: Sequence[int], emit: EmitStats) -> None: ...


@dataclass(frozen=True)
class _StatsGroup:
    reader: SignalReader
    indices: tuple[int, ...]


OnWindow = Callable[[int, int], None]
OnTick = Callable[[int], None]


class Sampler:
    def __init__(self, plan: SamplingPlan, ring: Ring, readers: Mapping[str, SignalReader],
                 window_ms: int, on_window: OnWindow, on_tick: OnTick | None = None) -> None:
        self._ring = ring
        self._on_tick = on_tick
        self._window_ms = window_ms
        self._on_window = on_window
        self._stale_after = plan.stale_after_ms / 1000
        self._last: dict[int, list[SignalReader]] = {}
        self._stats: dict[int, list[_StatsGroup]] = {}
        for period in plan.periods_ms:
            in_period = [s for s in plan.signals if s.period_ms == period]
            sources = list(dict.fromkeys(s.source for s in in_period))
            self._last[period] = [readers[name] for name in sources
                                  if any(s.mode == "last" and s.source == name for s in in_period)]
            self._stats[period] = [
                _StatsGroup(readers[name], indices)
                for name in sources
                if (indices := tuple(s.index for s in in_period
                                     if s.mode == "stats" and s.source == name))
            ]
        self._next_tick: dict[int, int] = {}
        self._window_start = 0
        self._window_end = 0
        # The earliest tick or window end still ahead: frames before it only move time on.
        self._next_moment = 0
        self.now_ms: int | None = None
        # The latest tick or window end done (or the start): a frame before it is late.
        self.passed_ms = 0

    @property
    def window_start_ms(self) -> int:
        return self._window_start

    def advance(self, now: float) -> None:
        """Move event time to `now` (seconds), emitting every tick and window end passed."""
        now_ms = int(now * 1000)
        last = self.now_ms
        # The per-frame fast path: nothing falls due between the last frame and this one.
        if last is not None and last < now_ms < self._next_moment \
                and now_ms - last <= 2 * self._window_ms:
            self.now_ms = now_ms
            return
        if self.now_ms is None:
            self._start_at(now_ms)
        elif abs(now_ms - self.now_ms) > 2 * self._window_ms:
            log.warning("time jumped by %.1f s: sealing the open window and restarting there",
                        (now_ms - self.now_ms) / 1000)
            self._seal_partial()
            self._start_at(now_ms)
        elif now_ms <= self.now_ms:
            return
        self.now_ms = now_ms
        try:
            self._pass_moments(now_ms)
        except BaseException:
            # A sample or a seal failed (the pipeline logs it). The moment that failed is
            # done (its ticks and window moved on, its samples lost); time stays there, so
            # the next advance does the moments after it. Left at `now`, those would never
            # be done, and the event-time gate, which waits for them, would spin forever.
            self.now_ms = self.passed_ms
            self._next_moment = 0
            raise

    def _pass_moments(self, now_ms: int) -> None:
        """Every tick and window end up to `now_ms`, in time order."""
        next_tick = self._next_tick
        while True:
            # No signal at all (consent off) still seals windows of health counters.
            tick = min(next_tick.values(), default=self._window_end)
            moment = min(tick, self._window_end)
            if moment > now_ms:
                self._next_moment = moment
                return
            self.passed_ms = moment
            due = [period for period, at in next_tick.items() if at == moment]
            try:
                for period in due:
                    self._emit_stats(period, moment - period)
                if moment == self._window_end:
                    self._seal(moment)
                for period in due:
                    self._emit_last(period, moment)
            finally:
                for period in due:
                    next_tick[period] = moment + period
            if due and self._on_tick is not None:
                self._on_tick(moment)

    def quiet_span(self) -> tuple[int, int]:
        """[low, high) in ms: a time inside it falls nothing due and jumps nowhere, so
        `advance` to it only moves `now_ms` forward (the per-frame fast path, for a batch)."""
        if self.now_ms is None:
            return 0, 0
        return self.now_ms - 2 * self._window_ms, self._next_moment

    @property
    def next_moment_ms(self) -> int:
        """The earliest tick or window end still to come (exact, unlike `quiet_span`'s high,
        which is 0 until the next `advance` after a seal or a restart)."""
        return min(min(self._next_tick.values(), default=self._window_end), self._window_end)

    def seal_now(self) -> bool:
        """Seal the open window at the current event time and carry on with a new one."""
        if self.now_ms is None:
            return False
        self._seal(self.now_ms + 1)
        return True

    def resume_after(self, now_ms: int) -> None:
        """Carry on where another sampler `finish`ed at `now_ms` (a config reload): the next
        ticks and the next window start after it, so no sample is labelled twice."""
        self.now_ms = self.passed_ms = now_ms
        self._next_moment = 0
        self._next_tick = {period: (now_ms // period + 1) * period for period in self._last}
        self._window_start = now_ms + 1
        self._window_end = ((now_ms + 1) // self._window_ms + 1) * self._window_ms

    def finish(self) -> None:
        """Seal the open, partial window at the current event time (shutdown, end of replay)."""
        if self.now_ms is None:
            return
        self._seal_partial()
        self.now_ms = None

    def _seal_partial(self) -> None:
        """Emit the statistics of the periods under way, then seal up to now (inclusive:
        a tick at exactly now was emitted, and a window holds labels below its end)."""
        assert self.now_ms is not None
        for period, at in self._next_tick.items():
            self._emit_stats(period, at - period)
        self._seal(self.now_ms + 1)

    def _start_at(self, now_ms: int) -> None:
        self.passed_ms = now_ms
        self._next_moment = 0
        self._next_tick = {period: -(-now_ms // period) * period for period in self._last}
        self._window_start = now_ms // self._window_ms * self._window_ms
        self._window_end = self._window_start + self._window_ms

    def _seal(self, end_ms: int) -> None:
        self._next_moment = 0
        start = self._window_start
        self._window_start = end_ms
        self._window_end = (end_ms // self._window_ms + 1) * self._window_ms
        self._on_window(start, end_ms)

    def _emit_last(self, period: int, at_ms: int) -> None:
        # Gathered, then written to the ring in one go (`Ring.append_values`).
        signals: list[int] = []
        values: list[int | float] = []
        add_signal, add_value = signals.append, values.append

        def emit(index: int, value: int | float) -> None:
            add_signal(index)
            add_value(value)

        at = at_ms / 1000
        for reader in self._last[period]:
            reader.sample_last(period, at, self._stale_after, emit)
        self._ring.append_values(at_ms, signals, values)

    def _emit_stats(self, period: int, label_ms: int) -> None:
        append = self._ring.append

        def emit(index: int, low: int | float, high: int | float, total: int | float,
                 count: int) -> None:
            append(label_ms, index, Field.MIN, low)
            append(label_ms, index, Field.MAX, high)
            append(label_ms, index, Field.SUM, total)
            append(label_ms, index, Field.COUNT, count)

        for group in self._stats[period]:
            group.reader.take_stats(group.indices, emit)
