"""Play a recorded CAN log onto a python-can bus, at real time or a speed factor.

Used by the `replay` source (onto a private virtual bus) and by `edge-agent replay` (onto a
real interface such as vcan0): the same job as can-utils' `canplayer`, where that is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import can

from agent.errors import ConfigError

LOOP_GAP = 1.0

Send = Callable[[can.Message], None]


def check_log_readable(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: log file not found")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in can.io.player.MESSAGE_READERS:
        raise ConfigError(f"{path}: python-can cannot read {''.join(path.suffixes)} logs "
                          f"(use one of {', '.join(sorted(can.io.player.MESSAGE_READERS))})")


class Player:
    """Sends the frames of a log in order; `speed` 0 means as fast as the bus takes them.

    With `rebase` the log's timestamps are shifted to start now; with `loop` the log starts
    over (timestamps keep increasing) until `stop` is set.
    """

    def __init__(self, path: Path, *, speed: float = 1.0, loop: bool = False,
                 rebase: bool = True) -> None:
        check_log_readable(path)
        self.path = path
        self.speed = speed
        self.loop = loop
        self.rebase = rebase
        self.frames_played = 0
        self.last_sent = 0.0
        self._clock_origin: tuple[float, float] | None = None  # (event time, monotonic)

    def now(self) -> float:
        """The log's notion of now: where playback would be if a frame were due."""
        origin = self._clock_origin
        if origin is None or self.speed == 0:
            return self.last_sent
        event_time, started = origin
        return event_time + (time.monotonic() - started) * self.speed

    def play(self, send: Send, stop: threading.Event) -> None:
        """Hand every frame to `send` at its time; frames keep the log's channel name."""
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
                send(frame)
                self.last_sent = frame.timestamp
                self.frames_played += 1
            if not self.loop or first is None or last is None:
                return
            offset = (offset or 0.0) + (last - first) + LOOP_GAP

    @staticmethod
    def onto(bus: can.BusABC) -> Send:
        """Send every frame onto `bus`, whatever channel the log recorded it on."""
        def send(frame: can.Message) -> None:
            frame.channel = None  # python-can's socketcan would send to the recorded name
            bus.send(frame)

        return send

    def _pace(self, event_time: float, stop: threading.Event) -> None:
        if self.speed == 0:
            return
        if self._clock_origin is None:
            self._clock_origin = (event_time, time.monotonic())
            return
        origin_time, origin_monotonic = self._clock_origin
        wait = origin_monotonic + (event_time - origin_time) / self.speed - time.monotonic()
        if wait > 0.001:
            stop.wait(wait)
