"""`edge-agent diag gps`: the gpsd link, the fix, the position and GPS time against the clock."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.diag.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    age,
    common_options,
    console,
    run_against_daemon,
)

POSITION_ORDER = ("mode", "lat", "lon", "alt", "speed", "track", "hdop", "sats")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gps", parents=[common_options()], help="gpsd connection, fix, position, GPS time",
        description="Per gpsd source: connection, fix mode, the latest position and its age, "
                    "reports gpsd sent that were rejected (by reason), and how far the system "
                    "clock is from GPS time. Exit code 1 without a fix or connection.")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "gps", render))


def render(document: dict[str, Any]) -> int:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    for source in document["sources"]:
        table = Table("", "value", title=f"gpsd {source['name']} ({source['channel']})",
                      title_justify="left")
        table.add_row("connected", "yes" if source.get("connected") else "no")
        table.add_row("fix", source["fix"])
        readings = source["readings"]
        for quantity in POSITION_ORDER:
            reading = readings.get(quantity)
            if reading is not None and quantity != "mode":
                table.add_row(quantity, f"{reading['value']:.7g} {reading['unit']}".strip())
        table.add_row("last report", age(source["last_reading_age_s"]))
        table.add_row("reconnects", str(source["reconnects"]))
        out.print(table)
    offset = document["gps_minus_system_s"]
    out.print(f"clock: {document['clock']}; GPS minus system time: "
              f"{'no recent fix' if offset is None else f'{offset:+.3f} s'}")
    for warning in document["warnings"]:
        out.print(f"[bold red]![/] {escape(warning)}")
    return EXIT_PROBLEM if document["warnings"] else EXIT_OK
