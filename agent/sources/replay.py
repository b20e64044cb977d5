"""Replay a recorded log (candump .log, .asc, .blf, optionally .gz) onto a virtual bus.

A player thread reads the log with python-can's readers and sends each frame, at real time or
a speed factor, to a private python-can virtual bus; the source reads that bus exactly as it
would read a real one. Timestamps are kept from the log, shifted to start now when `rebase` is
set, so sampling follows the recording's own time even when played faster than real time.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path

import can

from agent.errors import ConfigError
from agent.health import SourceHealth
from agent.sources.base import OnFrame, OnIdle
from agent.sources.canbus import CanBusSource

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4096
LOOP_GAP = 1.0
_channels = itertools.count()


class ReplaySource(CanBusSource):
    def __init__(self, name: str, health: SourceHealth, path: Path, *, speed: float, loop: bool,
                 rebase: bool) -> None:
        self._channel = f"edge-agent-replay-{name}-{next(_channels)}"
        super().__init__(name, health, {"interface": "virtual", "channel": self._channel,
                                "preserve_timestamps": True, "rx_queue_size": QUEUE_FRAMES}, [])
        self.path = path
        self.speed = speed
        self.loop = loop
        self.rebase = rebase
        self._player_done = threading.Event()
        self._clock_origin: tuple[float, float] | None = None  # (event time, monotonic)
        self._last_sent = 0.0
        self.frames_played = 0
        _check_readable(path)

    @property
    def is_finite(self) -> bool:
        return not self.loop

    def run(self, on_frame: OnFrame, on_idle: OnIdle, stop: threading.Event) -> None:
        bus = self.open_bus()  # the reader's end must exist before the player sends
        player = threading.Thread(target=self._play, args=(stop,), name=f"replay-{self.name}",
                                  daemon=True)
        player.start()
        try:
            self._receive(bus, on_frame, on_idle, stop)
        finally:
            bus.shutdown()
            player.join(timeout=2)

    def idle_time(self) -> float:
        origin = self._clock_origin
        if origin is None or self.speed == 0:
            return self._last_sent
        event_time, started = origin
        return event_time + (time.monotonic() - started) * self.speed

    def end_of_data(self) -> bool:
        return self._player_done.is_set()

    def _play(self, stop: threading.Event) -> None:
        sender = can.Bus(interface="virtual", channel=self._channel, preserve_timestamps=True)
        try:
            offset = None
            while not stop.is_set():
                first = last = None
                for frame in can.LogReader(str(self.path)):
                    if stop.is_set():
                        return
                    if offset is None:
                        offset = (time.time() - frame.timestamp) if self.rebase else 0.0
                    first = frame.timestamp if first is None else first
                    last = frame.timestamp
                    frame.timestamp += offset
                    self._pace(frame.timestamp, stop)
                    frame.channel = None
                    sender.send(frame)
                    self._last_sent = frame.timestamp
                    self.frames_played += 1
                if not self.loop or first is None or last is None:
                    return
                offset = (offset or 0.0) + (last - first) + LOOP_GAP
        except (OSError, ValueError, can.CanError) as exc:
            log.error("%s: cannot replay %s: %s", self.name, self.path, exc)
        finally:
            sender.shutdown()
            self._player_done.set()

    def _pace(self, event_time: float, stop: threading.Event) -> None:
        if self.speed == 0:
            return
        if self._clock_origin is None:
            self._clock_origin = (event_time, time.monotonic())
            return
        origin_time, origin_monotonic = self._clock_origin
        due = origin_monotonic + (event_time - origin_time) / self.speed
        wait = due - time.monotonic()
        if wait > 0.001:
            stop.wait(wait)


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: replay log not found")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in can.io.player.MESSAGE_READERS:
        raise ConfigError(f"{path}: python-can cannot read {''.join(path.suffixes)} logs "
                          f"(use one of {', '.join(sorted(can.io.player.MESSAGE_READERS))})")
