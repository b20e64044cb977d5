"""`edge-agent diag queue`: the spool — what waits to be sent.

With the agent running it answers; when it is down the spool file itself is read (read only:
batches and bytes per lane and consent level, the oldest batch's age), and the screen says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent.cli.diag.common import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_PROBLEM,
    age,
    common_options,
    console,
    run_against_daemon,
    size,
)
from agent.config.schema import CONSENT_LEVELS, read_control_settings
from agent.errors import AgentError
from agent.output.spool_file import PRIORITY_EVENT, SPOOL_FILE, read_spool_file
from agent.runtime.control import ControlUnavailable


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "queue", parents=[common_options()], help="batches waiting in the spool",
        description="Spool depth and the next batches to be sent. With the agent stopped, "
                    "the spool file named by --config is read instead (read only): batches "
                    "and bytes per lane and consent level, and the oldest batch's age.")
    parser.add_argument("--limit", type=int, default=20,
                        help="next batches to list (default: %(default)s)")
    parser.set_defaults(func=lambda args: run_against_daemon(
        args, "queue", render, when_down=lambda exc: offline(args, exc), limit=args.limit))


def render(queue: dict[str, Any]) -> int:
    from rich.table import Table

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


def spool_file_document(args: argparse.Namespace, down: ControlUnavailable) -> dict[str, Any]:
    """What the spool file named by --config holds, for when the agent is down (or why it
    cannot be read: `spool_file_error`)."""
    try:
        spool = read_spool_file(read_control_settings(args.config).state.directory
                                / SPOOL_FILE)
    except (AgentError, OSError) as exc:
        return {"running": False, "error": str(down), "spool_file_error": str(exc)}
    now = time.time()
    return {
        "running": False, "error": str(down), "source": "spool file", "path": str(spool.path),
        "depth": spool.depth, "bytes": spool.bytes,
        "oldest_age_s": None if spool.oldest_created is None
        else round(max(0.0, now - spool.oldest_created), 1),
        "lanes": [{"lane": _lane(lane.priority), "consent": _consent(lane.consent),
                   "batches": lane.batches, "bytes": lane.bytes,
                   "oldest_age_s": round(max(0.0, now - lane.oldest_created), 1)}
                  for lane in spool.lanes]}


def offline(args: argparse.Namespace, down: ControlUnavailable) -> int:
    """The agent is not running: read its spool file. Exit 3 all the same (not running)."""
    document = spool_file_document(args, down)
    if args.json:
        print(json.dumps(document, indent=2))
        return EXIT_NOT_RUNNING
    from rich.markup import escape
    from rich.table import Table

    if "spool_file_error" in document:
        print(f"edge-agent: {down}", file=sys.stderr)
        print(f"edge-agent: cannot read the spool file either: {document['spool_file_error']}",
              file=sys.stderr)
        return EXIT_NOT_RUNNING
    out = console()
    out.print(f"the agent is not running: read the spool file {escape(document['path'])} "
              "(read only)")
    out.print(f"{document['depth']} batches waiting, {size(document['bytes'])}, oldest "
              f"{age(document['oldest_age_s'])}")
    if document["lanes"]:
        table = Table("lane", "consent", "batches", "bytes", "oldest")
        for lane in document["lanes"]:
            table.add_row(lane["lane"], lane["consent"], str(lane["batches"]),
                          size(lane["bytes"]), age(lane["oldest_age_s"]))
        out.print(table)
    return EXIT_NOT_RUNNING


def _lane(priority: int) -> str:
    return "events" if priority == PRIORITY_EVENT else "telemetry"


def _consent(rank: int) -> str:
    return CONSENT_LEVELS[rank] if 0 <= rank < len(CONSENT_LEVELS) else f"rank {rank}"
