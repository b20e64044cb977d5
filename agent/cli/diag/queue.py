"""`edge-agent diag queue`: the spool — what waits to be sent."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from agent.cli.diag.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    common_options,
    console,
    run_against_daemon,
    size,
)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "queue", parents=[common_options()], help="batches waiting in the spool",
        description="Spool depth and the next batches to be sent.")
    parser.add_argument("--limit", type=int, default=20,
                        help="next batches to list (default: %(default)s)")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "queue", render,
                                                             limit=args.limit))


def render(queue: dict[str, Any]) -> int:
    out = console()
    out.print(f"{queue['depth']} batches waiting, {size(queue['bytes'])} of "
              f"{size(queue['max_bytes'])}; {queue['evicted']} evicted, {queue['not_kept']} not "
              "written (disk full)")
    if queue["next"]:
        table = Table("seq", "topic", "priority", "bytes", title="next out", title_justify="left")
        for batch in queue["next"]:
            table.add_row(str(batch["seq"]), batch["topic"], str(batch["priority"]),
                          str(batch["bytes"]))
        out.print(table)
    return EXIT_PROBLEM if queue["evicted"] or queue["not_kept"] else EXIT_OK
