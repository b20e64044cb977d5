"""Play a recorded CAN log onto a python-can bus, at real time or a speed factor.

Used by the `replay` source (onto a private virtual bus) and by `edge-agent replay` (onto a
real interface such as vcan0): the same job as can-utils' `canplayer`, where that is missing.

A frame's channel is the log's name for it, as the file writes it: "can0" in a candump log,
1 for Vector's first channel in ASC and BLF (python-can counts those from 0; the file, CANoe
and CANalyzer from 1), the number written in a PCAN .trc. Players of one log that exist at
the same time share its timeline (where playback started), so that sources playing different
channels of one log keep the recorded timing between them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import can

from agent.errors import ConfigError
from agent.sources.logfile import read_frames

log = logging.getLogger(__name__)

LOOP_GAP = 1.0

# Log formats whose channel numbers python-can lowers by one (0 = the file's channel 1).
_COUNTED_FROM_ZERO = (".asc", ".blf")

Send = Callable[[can.Message], None]


def check_log_readable(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: log file not found")
    if _log_format(path) not in can.io.player.MESSAGE_READERS:
        raise ConfigError(f"{path}: python-can cannot read {''.join(path.suffixes)} logs "
                          f"(use one of {', '.join(sorted(can.io.player.MESSAGE_READERS))})")


def _log_format(path: Path) -> str:
    """The suffix that names the log's format: ".log" for "drive.log.gz"."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


@dataclass(frozen=True)
class _Origin:
    """Where playback of a log started: its first timestamp (of any channel) and the clocks
    at that moment."""

    first: float
    wall: float
    monotonic: float


class _Timeline:
    """The origin of one log's playback, decided by the first player to read a frame of it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.origin: _Origin | None = None

    def start(self, first: float) -> _Origin:
        with self._lock:
            if self.origin is None:
                self.origin = _Origin(first, time.time(), time.monotonic())
            return self.origin


# One timeline per log file while a player of it exists: the agent's sources (and their
# players) live as long as the pipeline keeps them, so every replay of a log in a run, and a
# source added by a reload while another still plays that log, share one offset. Once no
# player of a log is left, the next one starts afresh.
_TIMELINES: weakref.WeakValueDictionary[Path, _Timeline] = weakref.WeakValueDictionary()
_TIMELINES_LOCK = threading.Lock()


def _timeline_of(path: Path) -> _Timeline:
    key = path.resolve()
    with _TIMELINES_LOCK:
        timeline = _TIMELINES.get(key)
        if timeline is None:
            timeline = _TIMELINES[key] = _Timeline()
        return timeline


class Player:
    """Sends the frames of a log in order; `speed` 0 means as fast as the bus takes them.

    With `rebase` the log's timestamps are shifted to start now; with `loop` the log starts
    over (timestamps keep increasing) until `stop` is set. With `channel`, only the frames of
    that log channel are sent (the others still set the timeline and the loop's length).
    """

    def __init__(self, path: Path, *, speed: float = 1.0, loop: bool = False,
                 rebase: bool = True, channel: str = "") -> None:
        check_log_readable(path)
        self.path = path
        self.speed = speed
        self.loop = loop
        self.rebase = rebase
        self.channel = channel
        self.frames_played = 0
        self.frames_skipped = 0
        self.last_sent = 0.0
        self._counted_from_zero = _log_format(path) in _COUNTED_FROM_ZERO
        self._timeline = _timeline_of(path)

    def now(self) -> float:
        """The log's notion of now: where playback would be if a frame were due."""
        origin = self._timeline.origin
        if origin is None or self.speed == 0:
            return self.last_sent
        return (origin.first + self._offset(origin)
                + (time.monotonic() - origin.monotonic) * self.speed)

    def play(self, send: Send, stop: threading.Event) -> None:
        """Hand every frame (of `channel`) to `send` at its time; frames keep the log's name
        for their channel."""
        origin = None
        shift = 0.0  # the loop's: each pass after the first is later by the log's length
        while not stop.is_set():
            first = last = None
            others: set[str] = set()
            for frame in read_frames(self.path):
                if stop.is_set():
                    return
                if not math.isfinite(frame.timestamp):
                    self._skip_unstamped(frame)
                    continue
                if origin is None:
                    origin = self._timeline.start(frame.timestamp)
                first = frame.timestamp if first is None else first
                last = frame.timestamp
                recorded = self._recorded_channel(frame)
                if self.channel and recorded != self.channel:
                    others.add(recorded)
                    continue
                frame.timestamp += self._offset(origin) + shift
                self._pace(origin, frame.timestamp, stop)
                send(frame)
                self.last_sent = frame.timestamp
                self.frames_played += 1
            if self.channel and self.frames_played == 0 and shift == 0 and not stop.is_set():
                log.warning("%s: no frame on channel %r (the log's channels: %s)", self.path,
                            self.channel, ", ".join(sorted(others)) or "none")
            if not self.loop or first is None or last is None:
                return
            shift += (last - first) + LOOP_GAP

    def _skip_unstamped(self, frame: can.Message) -> None:
        """A frame whose time is not a number (a damaged log line such as "(1e400) ..."):
        event time cannot place it, so it is left out and counted (logged the first time)."""
        self.frames_skipped += 1
        if self.frames_skipped == 1:
            log.warning("%s: frame 0x%X has no finite timestamp (%r): left out (further ones "
                        "are counted, not logged)", self.path, frame.arbitration_id,
                        frame.timestamp)

    @staticmethod
    def onto(bus: can.BusABC) -> Send:
        """Send every frame onto `bus`, whatever channel the log recorded it on."""
        def send(frame: can.Message) -> None:
            frame.channel = None  # python-can's socketcan would send to the recorded name
            bus.send(frame)

        return send

    def _recorded_channel(self, frame: can.Message) -> str:
        """The frame's channel as the log names it (also set on the frame)."""
        if self._counted_from_zero and isinstance(frame.channel, int):
            frame.channel += 1
        return "" if frame.channel is None else str(frame.channel)

    def _offset(self, origin: _Origin) -> float:
        return origin.wall - origin.first if self.rebase else 0.0

    def _pace(self, origin: _Origin, event_time: float, stop: threading.Event) -> None:
        if self.speed == 0:
            return
        since_start = event_time - origin.first - self._offset(origin)
        wait = origin.monotonic + since_start / self.speed - time.monotonic()
        if wait > 0.001:
            stop.wait(wait)
