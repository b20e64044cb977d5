"""Sampling at frame time: the `change` and `bounded` signals of a plan, written to the ring
as frames arrive (not at ticks), with the frame's own timestamp in ms.

The stores (agent/decoding/frames.py, values.py) decode these signals on every frame and hand
each raw value to `observe`; the rule of the signal's mode (agent/sampling/change.py, door.py)
decides whether it is a sample. Before a window is sealed, `flush` writes the points the
`bounded` rule still holds back, so that each batch is complete up to its last frame. The event
time gate (agent/sampling/event_time.py) hands a store only frames before the next window end,
so a sample always lands in the window its time belongs to.

Each window after the first opens with the value every signal holds at its start t0, stamped
t0 (`flush(next_t0_ms)`; docs/sampling.md "Window start"): written when the signal's first
frame at or after t0 arrives, so that it travels in the new window's batch, before that frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from agent.sampling.change import ChangeFilter
from agent.sampling.door import SwingingDoor
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sampling.ring import Field, Ring

FRAME_TIME_MODES = ("change", "bounded")


@dataclass(frozen=True)
class FrameTimeStats:
    samples: int  # written to the ring since start
    late: int  # frames older than their signal's previous frame, ignored


class FrameTimeSampler:
    """Per-signal `change` filters and `bounded` doors of a plan, writing into `ring`."""

    def __init__(self, plan: SamplingPlan, ring: Ring) -> None:
        self._ring = ring
        self._changes: dict[int, ChangeFilter] = {}
        self._doors: dict[int, SwingingDoor] = {}
        self._emits: dict[int, partial[None]] = {}
        for signal in plan.signals:
            if signal.mode == "change":
                self._changes[signal.index] = ChangeFilter(
                    signal.deadband, signal.scale, signal.heartbeat_ms)
            elif signal.mode == "bounded":
                self._doors[signal.index] = SwingingDoor(
                    raw_epsilon(signal), signal.heartbeat_ms)
                self._emits[signal.index] = partial(self._append, signal.index)
        self.samples = 0
        # Signals whose window-start sample is still due, and that window's start.
        self._due: set[int] = set()
        self._window_start = 0

    def observe(self, index: int, time_ms: int, value: int | float) -> None:
        """A frame of signal `index` stamped `time_ms` carried raw `value`."""
        if index in self._due and time_ms >= self._window_start:
            self._due.discard(index)
            self._open(index)
        change = self._changes.get(index)
        if change is not None:
            if change.observe(time_ms, value):
                self._append(index, time_ms, value)
            return
        door = self._doors.get(index)
        if door is not None:
            door.observe(time_ms, value, self._emits[index])

    def flush(self, next_t0_ms: int | None = None) -> None:
        """Write every point held back (a window is about to be sealed); with `next_t0_ms`,
        the next window starts there and each signal's value held at that time is due."""
        last_ms = None if next_t0_ms is None else next_t0_ms - 1
        for index, door in self._doors.items():
            door.flush(self._emits[index], last_ms)
        if next_t0_ms is not None:
            self._window_start = next_t0_ms
            self._due = set(self._changes) | set(self._doors)

    def _open(self, index: int) -> None:
        t0 = self._window_start
        change = self._changes.get(index)
        if change is None:
            self._doors[index].window_start(t0, self._emits[index])
            return
        value = change.window_start(t0)
        if value is not None:
            self._append(index, t0, value)

    def stats(self) -> FrameTimeStats:
        late = sum(c.late for c in self._changes.values()) + sum(
            d.late for d in self._doors.values())
        return FrameTimeStats(samples=self.samples, late=late)

    def _append(self, index: int, time_ms: int, value: int | float) -> None:
        self._ring.append(time_ms, index, Field.VALUE, value)
        self.samples += 1


def raw_epsilon(signal: PlannedSignal) -> float:
    """The signal's ε in raw units (ε is given in physical units)."""
    return signal.epsilon / abs(signal.scale) if signal.scale else float("inf")

