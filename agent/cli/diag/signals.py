"""`edge-agent diag signals [GLOB]`: current decoded values with units and age."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from agent.cli.diag.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    common_options,
    console,
    run_against_daemon,
)

if TYPE_CHECKING:
    from rich.table import Table


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "signals", parents=[common_options()], help="current values of sampled signals",
        description="Current value of every sampled signal matching GLOB (over "
                    "<source>.<Message>.<Signal>, or <Message>.<Signal> for any source), with "
                    "unit and age of the frame it came from. Exit 1 when none matches.")
    parser.add_argument("glob", nargs="?", default="*",
                        help="e.g. 'can0.TPMS_*.*' or 'ESP_*' (default: every signal)")
    parser.set_defaults(func=_do_signals)


def _do_signals(args: argparse.Namespace) -> int:
    def matched(rows: list[dict[str, Any]]) -> int:
        if rows:
            return EXIT_OK
        print(f"edge-agent: no sampled signal matches {args.glob!r} (a glob over "
              "<source>.<Message>.<Signal> or <Message>.<Signal>; `edge-agent diag signals` "
              "lists them all)", file=sys.stderr)
        return EXIT_PROBLEM

    return run_against_daemon(args, "signals", lambda rows: matched(rows) or render(rows),
                              json_exit=matched, glob=args.glob)


def table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    result = Table("signal", "value", "unit", "age")
    for row in rows:
        value = row["label"] or _number(row["value"])
        result.add_row(row["signal"], value, row["unit"], f"{row['age_s']:.1f} s")
    return result


def render(rows: list[dict[str, Any]]) -> int:
    console().print(table(rows))
    return EXIT_OK


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
