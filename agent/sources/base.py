"""The one small interface every data source implements, and the readings value sources deliver."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.sources.health import SourceHealth

if TYPE_CHECKING:  # python-can is imported by the sources that read frames, when opened
    import can


@dataclass(frozen=True, slots=True)
class Reading:
    """One physical value of a quantity, stamped with the wall-clock time it was received.

    `value` None withdraws the quantity: it has no value now (a GPS fix was lost), so the
    last one is not sampled again."""

    timestamp: float
    quantity: str
    value: float | None


# A batch of frames (or readings) at once: one lock per batch, not per frame, on busy buses.
OnFrames = Callable[[Sequence["can.Message | Reading"]], None]
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


def failure_warning(source: Mapping[str, Any], name: str) -> list[str]:
    """Any source whose own code failed (a bug, not the device) and was restarted: said
    first, since it explains the source's other symptoms."""
    if not source["failures"]:
        return []
    return [f"{name}: failed {source['failures']} times with an unexpected error and was "
            f"restarted (last: {source['last_failure']}); see the agent's log and report it"]
