"""One event time across several sources: per-source watermarks in front of the sampler.

Each source delivers its own frames in time order, but the sources run in their own threads:
one bus's frames can reach the pipeline before another bus's earlier ones. If the first bus
moved event time past a tick, the second bus's frames from before the tick would arrive too
late and the tick would sample older values. The gate stands between the sources and the
sampler (stores + clock) and applies three rules:

1. A source's **watermark** is the newest event time it has reported: its newest frame's
   timestamp, or, when it is quiet, its idle time. It promises nothing older will follow.
2. Event time moves to a moment only when every live source's watermark has reached it: the
   **release point** is the lowest watermark. A source lagging the newest watermark by more than
   `max_lateness` is not waited for (a silent or stalled bus never stalls the others), nor is a
   source that has not delivered yet; a finished replay is no longer live.
3. Frames stamped at or after the sampler's next moment (a tick or a window end) wait in their
   source's queue until time is released past them; frames before it go to their store at
   once. A frame older than the time already released is **late**: it is kept for the ticks
   still to come and counted in its source's health.

With one source the release point is that source's newest frame, so nothing ever waits:
the gate costs one pass over the timestamps of each batch.

Replays are the one kind of source that can wait: a `ReplayPacer` holds back a replay that
runs ahead of the other replays by more than half the lateness until they catch up, so a
replay at speed 0 samples exactly what the same log gives in real time.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import can

from agent.decoding.frames import EventClock
from agent.sources.base import Reading
from agent.sources.health import SourceHealth

Frame = can.Message | Reading
NEVER = float("-inf")


class SourceStore(Protocol):
    """What the gate feeds: a `FrameStore` or a `ValueStore`."""

    def accept_all(self, frames: Sequence[Frame], clock: EventClock) -> None: ...


class Clock(Protocol):
    """The sampler, seen from the gate."""

    now_ms: int | None
    passed_ms: int

    @property
    def next_moment_ms(self) -> int: ...

    def advance(self, now: float) -> None: ...

    def quiet_span(self) -> tuple[int, int]: ...


@dataclass
class _Source:
    store: SourceStore
    health: SourceHealth
    watermark: float = NEVER
    pending: deque[Frame] = field(default_factory=deque)
    finished: bool = False


class EventTimeGate:
    """Feeds the stores of every source and moves the sampler's time by the rules above.
    Not thread-safe: called under the pipeline lock."""

    def __init__(self, clock: Clock, stores: Mapping[str, SourceStore],
                 healths: Mapping[str, SourceHealth], max_lateness: float,
                 window_ms: int) -> None:
        self._clock = clock
        self._sources = {name: _Source(store, healths[name]) for name, store in stores.items()}
        self._lateness = max_lateness
        # A frame this far behind released time is a clock set back (or a looping replay),
        # not a late frame: the sampler restarts there (its own rule for jumps).
        self._jump_ms = 2 * window_ms
        self._waiting = 0  # sources with frames in `pending`

    # The EventClock the stores see: frames handed to them never reach the next moment, so
    # `advance` only moves time on inside the quiet span.
    def advance(self, now: float) -> None:
        clock = self._clock
        if clock.now_ms is not None \
                and clock.now_ms - self._jump_ms <= now * 1000 < clock.next_moment_ms:
            clock.advance(now)

    def quiet_span(self) -> tuple[int, int]:
        return self._clock.quiet_span()

    def offer(self, name: str, frames: Sequence[Frame]) -> None:
        """Frames of source `name`, in its own time order."""
        source = self._sources[name]
        newest = frames[-1].timestamp
        if newest > source.watermark:
            source.watermark = newest
        clock = self._clock
        now_ms = clock.now_ms
        if now_ms is not None and not self._waiting:
            # The hot path: nothing waits anywhere and the whole batch falls before the next
            # moment, so no other source can hold it back and nothing can be released.
            first = frames[0].timestamp * 1000
            if newest * 1000 < clock.next_moment_ms and first >= clock.passed_ms \
                    and first >= now_ms - self._jump_ms:
                source.store.accept_all(frames, self)
                return
        if now_ms is not None and frames[0].timestamp * 1000 < now_ms - self._jump_ms:
            self._restart_at(source, frames)
            return
        if source.pending:
            source.pending.extend(frames)
        else:
            self._apply(source, frames)
        self._release()

    def idle(self, name: str, now: float) -> None:
        """Source `name` is quiet: nothing older than `now` will come from it."""
        source = self._sources[name]
        if now > source.watermark:
            source.watermark = now
        self._release()

    def retire(self, name: str) -> None:
        """Source `name` ended (a replay without loop): no longer waited for."""
        source = self._sources[name]
        source.finished = True
        self._release()

    def drain(self) -> None:
        """Apply every waiting frame, in time order (before a seal at stop or a config
        switch: nothing received is left out of the last window)."""
        while (earliest := self._earliest_pending()) is not None:
            self._clock.advance(earliest)
            self._apply_pending()

    def _apply(self, source: _Source, frames: Sequence[Frame]) -> None:
        """Hand over the frames before the next moment; queue the rest."""
        if self._clock.now_ms is None:  # not started: the release point decides where
            self._queue(source, frames)
            return
        next_moment = self._clock.next_moment_ms
        cut = len(frames)
        for position, frame in enumerate(frames):
            if frame.timestamp * 1000 >= next_moment:
                cut = position
                break
        passed = self._clock.passed_ms
        if frames[0].timestamp * 1000 < passed:
            source.health.late += sum(1 for frame in frames[:cut]
                                      if frame.timestamp * 1000 < passed)
        if cut == len(frames):
            source.store.accept_all(frames, self)
            return
        if cut:
            source.store.accept_all(frames[:cut], self)
        self._queue(source, frames[cut:])

    def _queue(self, source: _Source, frames: Sequence[Frame]) -> None:
        if not source.pending:
            self._waiting += 1
        source.pending.extend(frames)

    def _apply_pending(self) -> None:
        for source in self._sources.values():
            if source.pending:
                frames = list(source.pending)
                source.pending.clear()
                self._waiting -= 1
                self._apply(source, frames)

    def _release(self) -> None:
        """Move time as far as every live source allows, applying waiting frames on the way."""
        target = self._release_point()
        while True:
            earliest = self._earliest_pending()
            if earliest is None or earliest > target:
                break
            self._clock.advance(earliest)
            self._apply_pending()
        if target != float("inf") and self._clock.now_ms is not None \
                and target * 1000 >= self._clock.next_moment_ms:
            self._clock.advance(target)

    def _release_point(self) -> float:
        live = [s.watermark for s in self._sources.values() if not s.finished]
        if not live:
            return float("inf")
        newest = max(live)
        return max(min(live), newest - self._lateness)

    def _earliest_pending(self) -> float | None:
        heads = [s.pending[0].timestamp for s in self._sources.values() if s.pending]
        return min(heads) if heads else None

    def _restart_at(self, source: _Source, frames: Sequence[Frame]) -> None:
        """Time went back by more than two windows: what waits is applied, the sampler
        restarts at the new time and every watermark starts afresh."""
        self.drain()
        for each in self._sources.values():
            each.watermark = NEVER
        source.watermark = frames[-1].timestamp
        self._clock.advance(frames[0].timestamp)
        self._apply(source, frames)
        self._release()


class ReplayPacer:
    """Holds back a replay that runs ahead of the other replays (any speed), so that the
    gate never has to give up waiting for a slower one. Shared by every pipeline of a run:
    a replay thread may be waiting in it while the config changes."""

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self._condition = threading.Condition()
        self._newest: dict[str, float] = {}
        self._replays: set[str] = set()

    def join(self, name: str) -> None:
        with self._condition:
            self._replays.add(name)

    def leave(self, name: str) -> None:
        """Replay `name` ended or stopped: nobody waits for it any more."""
        with self._condition:
            self._replays.discard(name)
            self._newest.pop(name, None)
            self._condition.notify_all()

    def pace(self, name: str, newest: float) -> None:
        """Replay `name` is about to hand over frames up to `newest`: wait while that is more
        than the lead ahead of the slowest other replay (one that has sent nothing yet
        counts as slowest)."""
        with self._condition:
            self._newest[name] = newest
            self._condition.notify_all()
            while True:
                others = [self._newest.get(other, NEVER) for other in self._replays
                          if other != name]
                if not others or newest - min(others) <= self.lead \
                        or name not in self._replays:
                    return
                self._condition.wait()
