"""Replay a recorded log (candump .log, .asc, .blf, optionally .gz) onto a virtual bus.

A player thread sends the log's frames, at real time or a speed factor, to a private
python-can virtual bus; the source reads that bus exactly as it would read a real one.
Timestamps are kept from the log, shifted to start now when `rebase` is set, so sampling
follows the recording's own time even when played faster than real time.

With `channel`, the source plays only that channel of the log ("can1" of a candump log; 1, 2,
... in ASC and BLF, as the file numbers them), so one multi-channel log feeds several sources.
Those sources share the log's timeline (agent/sources/player.py): with `rebase`, one offset for
all of them, so the channels keep their recorded timing between them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.source import SourceConfig
from agent.sources.base import OnFrames, OnIdle
from agent.sources.canbus import CanBusSource, bus_warnings, check_dbc
from agent.sources.health import SourceHealth
from agent.sources.registry import ErrorAt, SourceType

if TYPE_CHECKING:
    from agent.sources.player import Player

log = logging.getLogger(__name__)

# The player waits when the queue is full (python-can's virtual `send` blocks), so the depth
# loses nothing; it only sets how far a fast replay runs ahead of the pipeline, at ~0.5 KB of
# Message per queued frame. 512 is 125 ms of a full 500 kbit/s bus, eight receive batches.
QUEUE_FRAMES = 512
_channels = itertools.count()


class ReplaySource(CanBusSource):
    paced = True  # held back to the other replays' pace (agent/sampling/event_time.py)

    def __init__(self, name: str, health: SourceHealth, path: Path, *, speed: float, loop: bool,
                 rebase: bool, channel: str = "") -> None:
        self._bus_channel = f"edge-agent-replay-{name}-{next(_channels)}"
        super().__init__(name, health, {"interface": "virtual", "channel": self._bus_channel,
                                        "preserve_timestamps": True,
                                        "rx_queue_size": QUEUE_FRAMES}, [])
        # Imported here, as python-can in agent/sources/canbus.py: the player's log readers
        # are python-can's, and checking a config that names a replay needs none of them.
        from agent.sources.player import Player

        self.player: Player = Player(path, speed=speed, loop=loop, rebase=rebase,
                                     channel=channel)
        self._player_done = threading.Event()

    @property
    def is_finite(self) -> bool:
        return not self.player.loop

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        bus = self.open_bus()  # the reader's end must exist before the player sends
        player = threading.Thread(target=self._play, args=(stop,), name=f"replay-{self.name}",
                                  daemon=True)
        player.start()
        try:
            self.receive(bus, on_frames, on_idle, stop)
        finally:
            bus.shutdown()
            player.join(timeout=2)

    def idle_time(self) -> float:
        return self.player.now()

    def end_of_data(self) -> bool:
        return self._player_done.is_set()

    def _play(self, stop: threading.Event) -> None:
        import can

        from agent.sources.player import Player

        sender = can.Bus(interface="virtual", channel=self._bus_channel,
                         preserve_timestamps=True)
        try:
            self.player.play(Player.onto(sender), stop)
        except Exception as exc:  # python-can's readers raise what a malformed line makes
            # them (IndexError on "(inf) 0 3B1787F3##"): the replay ends there, said once.
            log.error("%s: cannot replay %s after %d frames: %s: %s", self.name,
                      self.player.path, self.player.frames_played, type(exc).__name__, exc)
        finally:
            sender.shutdown()
            self._player_done.set()


@dataclass(frozen=True)
class ReplayConfig(SourceConfig):
    """A recorded log played as if it were the bus (`channel`: only that channel of it)."""

    path: Path | None = None
    channel: str = ""
    speed: float = 1.0  # 1 real time, 10 ten times faster, 0 as fast as the agent takes it
    loop: bool = False
    rebase: bool = True


def _check(config: ReplayConfig, error: ErrorAt) -> None:
    check_dbc(config, error)
    if config.path is None:
        raise error("path", "a replay source needs the log file to play")
    if config.speed < 0:
        raise error("speed", "use 1 for real time, 10 for 10x, 0 for max")


def _open(config: ReplayConfig, can_filters: Sequence[dict[str, Any]],
          health: SourceHealth) -> ReplaySource:
    assert config.path is not None  # checked when the config was loaded
    return ReplaySource(config.name, health, config.path, speed=config.speed, loop=config.loop,
                        rebase=config.rebase, channel=config.channel)


def _where(config: ReplayConfig) -> str:
    return config.channel or str(config.path)


def _warnings(source: Mapping[str, Any]) -> list[str]:
    return bus_warnings(source, live=False)


SOURCE_TYPE = SourceType(name="replay", config=ReplayConfig, check=_check, open=_open,
                         where=_where, warnings=_warnings, recorded=True)
