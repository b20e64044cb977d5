"""`edge-agent diag sensors`: serial tire-pressure and suspension sensors, wheel by wheel."""

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
from agent.sources.health import rejected

COLUMNS = (("pressure", "{:.1f} kPa"), ("temperature", "{:.1f} °C"), ("battery", "{:.2f} V"),
           ("height", "{:.1f} mm"))


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sensors", parents=[common_options()], help="tire pressure and suspension sensors",
        description="Per serial sensor source: port state, the latest reading of every wheel "
                    "with its age, and rejected input by reason (bad checksum, out of range, "
                    "...). Exit code 1 when a port is away, silent, or rejected input.")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "sensors", render))


def render(document: dict[str, Any]) -> int:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    for source in document["sources"]:
        state = ("stale" if source.get("stale") else "ok") if source.get("connected") \
            else "not connected"
        table = Table("wheel", *(name for name, _ in COLUMNS), "age",
                      title=f"{source['name']}: {source['channel']}: {state}, "
                            f"{source['frames']} readings, {source['reconnects']} reopenings",
                      title_justify="left")
        for wheel, readings in source["wheels"].items():
            cells = [fmt.format(readings[name]["value"]) if name in readings else "-"
                     for name, fmt in COLUMNS]
            ages = [reading["age_s"] for reading in readings.values()]
            table.add_row(wheel, *cells, age(min(ages)) if ages else "never")
        out.print(table)
        counts = rejected(source)
        if counts:
            out.print("  rejected: " + ", ".join(f"{reason} {count}"
                                                 for reason, count in sorted(counts.items())))
    for warning in document["warnings"]:
        out.print(f"[bold red]![/] {escape(warning)}")
    return EXIT_PROBLEM if document["warnings"] else EXIT_OK
