"""`edge-agent`: the command line. Each subcommand is its own module; this file only collects.

Only the module of the command being run is imported (all of them for --help): the daemon
should not carry the diagnostics' terminal UI (rich) in its resident memory.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent.errors import AgentError

SUBCOMMANDS = ("run", "config", "decode", "verify", "keys", "diag", "replay", "privacy")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for every subcommand, or for `only` that one (the others stay unimported)."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-vehicle telematics edge agent: samples CAN signals through DBC files "
                    "into signed, compressed batches published over MQTT.")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="how much to log to stderr (default: INFO)")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True,
                                       metavar="COMMAND")
    for name in SUBCOMMANDS:
        if only is None or name == only:
            importlib.import_module(f"agent.cli.{name}").add_subparser(subparsers)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if it names one."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
