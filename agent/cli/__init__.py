"""`edge-agent`: the command line. Each subcommand is its own module; this file only collects."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent.cli import config, decode, diag, keys, run
from agent.errors import AgentError

SUBCOMMANDS = (run, config, decode, keys, diag)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-vehicle telematics edge agent: samples CAN signals through DBC files "
                    "into signed, compressed batches published over MQTT.")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="how much to log to stderr (default: INFO)")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True,
                                       metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
