"""`edge-agent diag request`: a one-off read for a technician (a DID or an OBD-II PID).

Asked through the running agent's poller of that bus, within its request budget: the agent
owns the bus's diagnostic traffic, and etiquette holds for one-off reads too. Read only.
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM, common_options, console, run_against_daemon


def _hex(text: str) -> int:
    return int(text, 16)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "request", parents=[common_options()], help="a one-off read of a DID or OBD-II PID",
        description="Read one data identifier (UDS 0x22) or OBD-II PID (mode 01) now, through "
                    "the running agent, on a bus with [[diagnostics.requests]]. Numbers are "
                    "hexadecimal. Exit code 1 when the ECU refused or did not answer.")
    parser.add_argument("--bus", required=True, help="the [[sources]] name of the bus (can0)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--did", type=_hex, help="data identifier, e.g. F190 (VIN)")
    what.add_argument("--pid", type=_hex, help="OBD-II mode 01 PID, e.g. 0C")
    parser.add_argument("--request-id", type=_hex, default=0x7E0,
                        help="the ECU's request ID (default: 7E0)")
    parser.add_argument("--response-id", type=_hex, default=0x7E8,
                        help="the ECU's response ID (default: 7E8)")
    parser.set_defaults(func=lambda args: run_against_daemon(
        args, "request", render, json_exit=exit_code, bus=args.bus,
        **({"did": args.did} if args.did is not None else {"pid": args.pid}),
        request_id=args.request_id, response_id=args.response_id))


def exit_code(document: dict[str, Any]) -> int:
    return EXIT_PROBLEM if document.get("error") else EXIT_OK


def render(document: dict[str, Any]) -> int:
    out = console()
    if document.get("error"):
        out.print(f"[bold red]![/] {document['bus']}: {document['error']}", markup=True)
        return EXIT_PROBLEM
    what = (f"DID {document['did']:04X}" if document["did"] is not None
            else f"PID {document['pid']:02X}")
    out.print(f"{document['bus']} {document['request_id']:03X}→{document['response_id']:03X} "
              f"{what}: {document['raw'] or '(empty)'}")
    if document["text"]:
        out.print(f"  text: {document['text']}")
    for name, value in document["values"].items():
        out.print(f"  {name} = {value:g}")
    return EXIT_OK
