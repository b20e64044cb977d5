"""`edge-agent diag live [GLOB]`: the signal table refreshed in place, like `cantools monitor`."""

from __future__ import annotations

import argparse
import json
import time

from rich.live import Live
from rich.markup import escape

from agent.cli.diag.common import EXIT_NOT_RUNNING, EXIT_OK, ask, common_options, console
from agent.cli.diag.signals import table
from agent.runtime.control import ControlUnavailable


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "live", parents=[common_options()], help="signal values refreshing in place",
        description="Refresh the values of the signals matching GLOB until Ctrl-C.")
    parser.add_argument("glob", nargs="?", default="*",
                        help="signals to show, as for diag signals (default: all)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--count", type=int, help="stop after this many refreshes")
    parser.set_defaults(func=_do_live)


def _do_live(args: argparse.Namespace) -> int:
    refreshes = 0
    try:
        with Live(console=console(), auto_refresh=False) as live:
            while args.count is None or refreshes < args.count:
                rows = ask(args, "signals", glob=args.glob)
                if args.json:
                    print(json.dumps({"time": time.time(), "signals": rows}), flush=True)
                else:
                    live.update(table(rows), refresh=True)
                refreshes += 1
                if args.count is None or refreshes < args.count:
                    time.sleep(args.interval)
    except ControlUnavailable as exc:
        console().print(f"edge-agent: {escape(str(exc))}")
        return EXIT_NOT_RUNNING
    except KeyboardInterrupt:
        pass
    return EXIT_OK
