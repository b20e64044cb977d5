"""`edge-agent config check FILE`: what a field tech runs before installing a config.

The same code as `edge-agent diag config check`, at the top level where people look for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.diag.config import do_check


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="check a config file",
        description="Validate a config file exactly as the agent (and an OTA update) would.")
    actions = parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate FILE, DBCs included; exit 1 if invalid")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(func=do_check)
