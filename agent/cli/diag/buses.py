"""`edge-agent diag buses`: per-bus rates, errors, unknown IDs and the installed filters."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM, common_options, console, run_against_daemon
from agent.sources.health import frame_problems


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "buses", parents=[common_options()], help="per-bus frame rates, errors, unknown IDs",
        description="Per bus: frame rate, error and bad frames, the IDs received that the "
                    "plan does not need (top N), and the frame filters installed.")
    parser.add_argument("--top", type=int, default=10, help="unknown IDs to list (default 10)")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "buses", render,
                                                             top=args.top))


def render(buses: list[dict[str, Any]]) -> int:
    from rich.table import Table

    out = console()
    problem = False
    for bus in buses:
        table = Table("counter", "value", title=f"bus {bus['name']} ({bus['type']} "
                      f"{bus['channel']})", title_justify="left")
        for key in ("frames_per_s", "frames", "ignored", "error_frames", "short_frames",
                    "decode_errors", "overflow", "reconnects"):
            table.add_row(key.replace("_", " "), str(bus[key]))
        out.print(table)
        problem |= frame_problems(bus) > 0
        if bus["unknown_ids"]:
            out.print("  not in the plan: " + ", ".join(
                f"{entry['id']} ({entry['frames']})" for entry in bus["unknown_ids"]))
        out.print(f"  filters ({len(bus['filters'])}): {' '.join(bus['filters'][:40])}"
                  f"{' ...' if len(bus['filters']) > 40 else ''}")
    return EXIT_PROBLEM if problem else EXIT_OK
