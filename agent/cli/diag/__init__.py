"""`edge-agent diag`: what a field technician runs. One module per subcommand."""

from __future__ import annotations

import argparse

from agent.cli.diag import (
    actions,
    bundle,
    buses,
    config,
    gps,
    live,
    privacy,
    queue,
    selftest,
    sensors,
    signals,
    status,
    uplink,
)

SUBCOMMANDS = (status, buses, signals, gps, sensors, live, queue, uplink, config, selftest,
               bundle, actions, privacy)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diag", help="diagnostics for field technicians",
        description="Diagnostics of the running agent (over its local control socket) and "
                    "offline checks of the installation. Tables by default, --json for "
                    "scripts; exit code 1 when something is wrong, 3 when the agent is not "
                    "running, 4 when this user may not use its socket (join the group "
                    "edge-agent-diag, or run as root).")
    commands = parser.add_subparsers(dest="diag_command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_subparser(commands)
