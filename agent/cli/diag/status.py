"""`edge-agent diag status`: one screen with everything a field tech checks first."""

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
    size,
)
from agent.sources.health import frame_problems, rejected


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status", parents=[common_options()], help="one screen: sources, spool, uplink, warnings",
        description="Show the running agent's state. Exit code 1 when there are warnings, 3 "
                    "when the agent is not running.")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "status", render))


def render(document: dict[str, Any]) -> int:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    uplink = document["uplink"]
    spool = document["spool"]
    ring = document["ring"]
    out.print(f"[bold]vehicle {document['vehicle']}[/]  boot {document['boot'][:8]}  up "
              f"{document['uptime_s']:.0f} s  config v{document['config']['version']}  clock "
              f"{document['clock']}")
    table = Table("source", "type", "channel", "frames/s", "frames", "errors", "reopened",
                  "last frame", title="sources", title_justify="left")
    for source in document["sources"]:
        errors = frame_problems(source) + sum(rejected(source).values())
        table.add_row(source["name"], source["type"], source["channel"],
                      f"{source['frames_per_s']:.0f}", str(source["frames"]), str(errors),
                      str(source["reconnects"]),
                      "finished" if source["finished"] else age(source["last_frame_age_s"]))
    out.print(table)
    state = "[green]connected[/]" if uplink["connected"] else "[red]not connected[/]"
    out.print(f"uplink  {state} to {uplink['host']}:{uplink['port']}"
              f"{' (TLS)' if uplink['tls'] else ' (PLAINTEXT)'}, {uplink['acked']} batches "
              f"acknowledged, last PUBACK {age(uplink['last_puback_age_s'])}")
    out.print(f"spool   {spool['depth']} batches, {size(spool['bytes'])} of "
              f"{size(spool['max_bytes'])}, oldest {age(spool['oldest_age_s'])}, "
              f"{spool['evicted']} evicted")
    batches = document["batches"]
    quiet = (f" ({batches['quiet']} quiet windows left out)" if batches.get("quiet") else "")
    out.print(f"ring    {_ring(ring)}; {batches['sealed']} batches sealed of "
              f"{batches['signals']} signals{quiet}")
    if document["warnings"]:
        out.print("[bold yellow]warnings[/]")
        for warning in document["warnings"]:
            out.print(f"  [yellow]![/] {escape(warning)}")
        return EXIT_PROBLEM
    out.print("[green]no warnings[/]")
    return EXIT_OK


def _ring(ring: dict[str, Any]) -> str:
    """The ring as what it holds: once full it stays full by design (the oldest records
    make room), so fullness is no problem; records lost before batching are."""
    held = min(ring["written"], ring["capacity"])
    state = "full, the oldest overwritten" if ring["written"] >= ring["capacity"] else \
        f"{ring['fill']:.0%} of {ring['capacity']}"
    lost = f", [red]{ring['lost']} lost before batching[/]" if ring["lost"] else ""
    return (f"holding {ring.get('lookback_s', 0):.0f} s of look-back ({held} records, "
            f"{state}{lost})")
