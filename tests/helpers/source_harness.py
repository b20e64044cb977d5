"""Running a real source in its thread and collecting what it delivers (tests of sources, and
of the diagnostics poller, which runs as a source does)."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Protocol

from agent.sources.base import OnFrames, OnIdle, Reading


class Runs(Protocol):
    """What runs in its own thread until `stop` is set: a source, or the diagnostics poller."""

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None: ...


class RunningSource:
    """Runs `source` until the `with` block ends; `readings` are what it delivered."""

    def __init__(self, source: Runs) -> None:
        self.source = source
        self.readings: list[Reading] = []
        self.idle_calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.source.run(self.readings.extend, self._idle, self._stop)

    def _idle(self, now: float) -> None:
        self.idle_calls += 1

    def values(self, quantity: str) -> list[float | None]:
        return [r.value for r in list(self.readings) if r.quantity == quantity]

    def __enter__(self) -> RunningSource:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the source did not stop when asked"
