"""The one small interface every data source implements, and the registry that picks one."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import can

from agent.decoding.values import Reading
from agent.sources.health import SourceHealth

# A batch of frames (or readings) at once: one lock per batch, not per frame, on busy buses.
OnFrames = Callable[[Sequence[can.Message | Reading]], None]
OnIdle = Callable[[float], None]


class Source(ABC):
    """A producer of timestamped frames, run in its own thread until `stop` is set.

    `on_frames` gets every frame, in batches (a `Reading` from gpsd and serial sensors, whose
    signals are declared by a catalogue instead of a DBC); `on_idle` gets the source's notion
    of "now" (seconds since the epoch) when nothing arrived for a while, so that sampling
    continues on a quiet bus.
    """

    # A recording (a replay) may be held back to keep pace with the others; a live source
    # is never made to wait (agent/sampling/event_time.py).
    paced = False

    def __init__(self, name: str, health: SourceHealth) -> None:
        self.name = name
        self.health = health
        self.finished = threading.Event()

    @abstractmethod
    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None: ...

    @property
    def is_finite(self) -> bool:
        """True for sources that end by themselves (a replay without loop)."""
        return False
