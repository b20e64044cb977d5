"""`edge-agent run`: the daemon."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from agent.ota.updater import startup_config
from agent.runtime.daemon import build_agent
from agent.runtime.malloc import apply_malloc_settings
from agent.runtime.notify import Notifier
from agent.runtime.pipeline import load_plan
from agent.runtime.watchdog import WatchdogFeeder

log = logging.getLogger(__name__)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the agent (the daemon)",
        description="Run the agent until SIGTERM/SIGINT: sample the configured sources and "
                    "publish signed batches. On stop the open window is sealed and sent. "
                    "SIGHUP reloads the config file without a restart.")
    parser.add_argument("--config", type=Path, default=Path("/etc/edge-agent/config.toml"),
                        help="config file (default: %(default)s)")
    parser.add_argument("--exit-after-replay", action="store_true",
                        help="stop once every non-looping replay source has played its log")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this many seconds (demos and tests)")
    parser.set_defaults(func=_do_run)


def _do_run(args: argparse.Namespace) -> int:
    apply_malloc_settings()  # as the systemd unit's Environment= lines, if not set there
    agent = build_agent(startup_config(args.config, check=load_plan))
    stop = threading.Event()
    reload = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    def request_reload(signum: int, frame: FrameType | None) -> None:
        reload.set()  # a queue or a lock is not safe in a signal handler: the loop takes it

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    notifier = Notifier()
    agent.start()
    notifier.ready(f"sampling {len(agent.batcher.dictionary)} signals from "
                   f"{len(agent.sources)} sources")
    watchdog = WatchdogFeeder(notifier, agent.liveness)
    next_rates = time.monotonic()
    while not stop.wait(0.2):
        watchdog.tick()
        if reload.is_set():
            reload.clear()
            log.info("received SIGHUP: reloading %s", args.config)
            agent.updater.reload_local()
        if time.monotonic() >= next_rates:
            agent.update_rates()
            next_rates += 1.0
        if deadline is not None and time.monotonic() >= deadline:
            break
        if args.exit_after_replay and agent.replay_finished():
            log.info("replay finished")
            break
    notifier.stopping()
    agent.stop()
    return 0

