"""`edge-agent diag dtc`: the trouble codes each ECU reported last, with descriptions."""

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


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dtc", parents=[common_options()], help="current trouble codes, with descriptions",
        description="The diagnostic trouble codes each ECU reported at its last read "
                    "([[diagnostics.requests]] with service = \"read_dtc\"), with their state "
                    "(pending, confirmed) and a description where known. Read only: the agent "
                    "never clears codes. Exit code 1 when any code is confirmed.")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "dtc", render,
                                                             json_exit=exit_code))


def exit_code(document: dict[str, Any]) -> int:
    confirmed = any(code["state"] == "confirmed" for ecu in document["ecus"]
                    for code in ecu["codes"])
    return EXIT_PROBLEM if confirmed else EXIT_OK


def render(document: dict[str, Any]) -> int:
    from rich.table import Table

    out = console()
    if not document["ecus"]:
        out.print("no trouble codes read yet (no read_dtc request in [[diagnostics.requests]], "
                  "or its first read is still due)")
        return EXIT_OK
    for ecu in document["ecus"]:
        table = Table("code", "state", "status", "description",
                      title=f"{ecu['request']} on {ecu['bus']}: {len(ecu['codes'])} codes, "
                            f"read {age(ecu['age_s'])} ago", title_justify="left")
        for code in ecu["codes"]:
            table.add_row(code["code"], code["state"], f"0x{code['status']:02X}",
                          code["description"] or "")
        out.print(table)
    return exit_code(document)
