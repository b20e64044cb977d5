"""`edge-agent diag signals [GLOB]`: current decoded values with units and age."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from agent.cli.diag.common import EXIT_OK, common_options, console, run_against_daemon


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "signals", parents=[common_options()], help="current values of sampled signals",
        description="Current value of every sampled signal matching GLOB (over "
                    "<source>.<Message>.<Signal>), with unit and age of the frame it came from.")
    parser.add_argument("glob", nargs="?", default="*", help="e.g. 'can0.TPMS_*.*'")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "signals", render,
                                                             glob=args.glob))


def table(rows: list[dict[str, Any]]) -> Table:
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
