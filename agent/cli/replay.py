"""`edge-agent replay`: play a candump/ASC/BLF log onto a CAN interface, like `canplayer`.

Timing and log reading are the replay source's (agent/sources/player.py). Channel mapping follows
canplayer: `vcan0=can0` sends the log's can0 frames to vcan0; with mappings, frames of other
log channels are skipped (and counted); without, every frame goes to `--channel`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import can

from agent.errors import AgentError
from agent.sources.player import Player, Send


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="play a CAN log onto an interface (canplayer without can-utils)",
        description="Play a CAN log (candump .log, .asc, .blf, optionally .gz; CAN FD and "
                    "remote frames included) onto a python-can bus at the recorded pace or "
                    "a speed factor. Prints a summary on stderr (--json: on stdout).")
    parser.add_argument("--interface", "-i", default="socketcan",
                        help="python-can interface (default: socketcan)")
    parser.add_argument("--channel", "-c", default="vcan0",
                        help="channel for all frames when no mapping is given (default: vcan0)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="1 = recorded pace, 10 = ten times faster, 0 = as fast as the "
                             "bus takes them (default: 1)")
    parser.add_argument("--loop", action="store_true",
                        help="start over at the end, until interrupted or --count")
    parser.add_argument("--count", "-n", type=int, default=0,
                        help="stop after sending this many frames (default: no limit)")
    parser.add_argument("--fd", action="store_true",
                        help="open the bus for CAN FD (always on for socketcan, where it costs "
                             "nothing; an FD frame needs an interface with mtu 72)")
    parser.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    parser.add_argument("log", type=Path, help="the log file")
    parser.add_argument("mapping", nargs="*", metavar="DEST=SOURCE",
                        help="send the log's SOURCE channel to the DEST channel (canplayer "
                             "style, e.g. vcan0=can0); repeat for several")
    parser.set_defaults(func=_do_replay)


def parse_mapping(specs: list[str]) -> dict[str, str]:
    """{log channel: destination channel} from canplayer-style `DEST=SOURCE` arguments."""
    routes = {}
    for spec in specs:
        destination, equals, source = spec.partition("=")
        if not equals or not destination or not source:
            raise AgentError(f"{spec!r}: a channel mapping is DEST=SOURCE, e.g. vcan0=can0")
        routes[source] = destination
    return routes


class Router:
    """Sends each frame to the bus its log channel maps to, counting what went where."""

    def __init__(self, buses: dict[str, can.BusABC], routes: dict[str, str] | None,
                 count: int, stop: threading.Event) -> None:
        self._routes = routes
        self._senders: dict[str, Send] = {name: Player.onto(bus) for name, bus in buses.items()}
        self._limit = count
        self._stop = stop
        self.sent: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def send(self, frame: can.Message) -> None:
        recorded = str(frame.channel) if frame.channel is not None else ""
        if self._routes is None:
            destination = next(iter(self._senders))
        elif recorded in self._routes:
            destination = self._routes[recorded]
        else:
            self.skipped[recorded] += 1
            return
        self._senders[destination](frame)
        self.sent[destination] += 1
        if self._limit and sum(self.sent.values()) >= self._limit:
            self._stop.set()


def _do_replay(args: argparse.Namespace) -> int:
    routes = parse_mapping(args.mapping) if args.mapping else None
    player = Player(args.log, speed=args.speed, loop=args.loop)
    channels = sorted(set(routes.values())) if routes else [args.channel]
    fd = args.fd or args.interface == "socketcan"
    buses = {channel: _open(args.interface, channel, fd) for channel in channels}
    stop = threading.Event()
    router = Router(buses, routes, args.count, stop)
    started = time.monotonic()
    error = None
    try:
        player.play(router.send, stop)
    except KeyboardInterrupt:
        error = "interrupted"
    except (can.CanError, OSError, ValueError) as exc:
        error = str(exc)
    finally:
        for bus in buses.values():
            bus.shutdown()
    if routes is not None and not router.sent and error is None:
        error = (f"no frame of the log is on {', '.join(sorted(routes))}, the channels the "
                 f"mapping names (the log's channels: "
                 f"{', '.join(sorted(router.skipped)) or 'none, it has no frames'})")
    summary: dict[str, Any] = {
        "log": str(args.log), "interface": args.interface, "sent": dict(router.sent),
        "skipped": dict(router.skipped), "frames": sum(router.sent.values()),
        "seconds": round(time.monotonic() - started, 3), "error": error}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"replay: {summary['frames']} frames in {summary['seconds']} s "
              f"({', '.join(f'{n} to {c}' for c, n in sorted(router.sent.items())) or 'none'})"
              + (f", skipped {dict(router.skipped)}" if router.skipped else "")
              + (f"; stopped: {error}" if error else ""), file=sys.stderr)
    return 0 if error is None else 130 if error == "interrupted" else 1


def _open(interface: str, channel: str, fd: bool) -> can.BusABC:
    try:
        return can.Bus(interface=interface, channel=channel, fd=fd)
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        raise AgentError(f"cannot open {interface} channel {channel!r}: {exc}") from exc

