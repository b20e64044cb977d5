"""`edge-agent diag`: what a field technician runs. One module per subcommand, imported only
when it is the one run (agent/cli/__init__.py's add_commands)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

# name: (its module in this package, its line in `edge-agent diag --help`)
COMMANDS = {
    "status": ("status", "one screen: sources, spool, uplink, warnings"),
    "buses": ("buses", "per-bus frame rates, errors, unknown IDs"),
    "signals": ("signals", "current values of sampled signals"),
    "gps": ("gps", "gpsd connection, fix, position, GPS time"),
    "sensors": ("sensors", "tire pressure and suspension sensors"),
    "live": ("live", "full-screen monitor of the signal values"),
    "queue": ("queue", "batches waiting in the spool"),
    "uplink": ("uplink", "MQTT connection state and a TLS test"),
    "config": ("config", "show or check a config file"),
    "selftest": ("selftest", "check config, DBC, keys, certs, clock, disk, broker"),
    "bundle": ("bundle", "a support tarball"),
    "flush": ("actions", "seal the open window now and queue it for sending"),
    "reconnect": ("actions", "drop the MQTT connection and reconnect"),
    "reload": ("actions", "re-read the config file without a restart (as SIGHUP)"),
    "privacy": ("privacy", "consent in force and what it keeps local"),
    "consent": ("privacy", "set the owner's consent level"),
    "dtc": ("dtc", "current trouble codes, with descriptions"),
    "request": ("request", "a one-off read of a DID or OBD-II PID"),
}


def add_subparser(subparsers: argparse._SubParsersAction,
                  argv: Sequence[str] | None = None) -> None:
    """`argv`: the command line after `diag`, to import only the module it names."""
    from agent.cli import add_commands

    parser = subparsers.add_parser(
        "diag", help="diagnostics for field technicians",
        description="Diagnostics of the running agent (over its local control socket) and "
                    "offline checks of the installation. Tables by default, --json for "
                    "scripts; exit code 1 when something is wrong, 3 when the agent is not "
                    "running, 4 when this user may not use its socket (join the group "
                    "edge-agent-diag, or run as root).")
    commands = parser.add_subparsers(dest="diag_command", required=True, metavar="COMMAND")
    add_commands(commands, __name__, COMMANDS, argv)
