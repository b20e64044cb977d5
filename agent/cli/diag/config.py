"""`edge-agent diag config show|check`: the configuration as the agent reads it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM, common_options
from agent.config.schema import load_config
from agent.errors import AgentError
from agent.privacy.disclosure import redact_config


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show or check a config file",
                                   description="Show the config file (secrets redacted) or "
                                               "check one before installing it.")
    actions = parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    show = actions.add_parser("show", parents=[common_options()],
                              help="the config in effect (secrets redacted)")
    show.set_defaults(func=_do_show)
    check = actions.add_parser("check", parents=[common_options()],
                               help="validate FILE exactly as the agent would, DBCs included")
    check.add_argument("file", type=Path, help="the config file to check")
    check.add_argument("--strict", action="store_true",
                       help="treat warnings (a sampling rule matching nothing, say) as problems")
    check.set_defaults(func=_do_check)


def _do_show(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except AgentError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print(json.dumps(asdict(config), indent=2, default=str))
    else:
        print(redacted_config_text(args.config), end="")
    return EXIT_OK


def _do_check(args: argparse.Namespace) -> int:
    """The same check as `edge-agent config check` (imported here: that module imports the
    diag package's exit codes)."""
    from agent.cli.config import do_check

    return do_check(args)


def redacted_config_text(path: Path) -> str:
    """The config file without secrets, zones, the pseudonym key or comments
    (agent/privacy/disclosure.py): what a technician may see. Here, not with the installation
    checks (agent/cli/diag/checks.py), whose imports (cantools, paho, cryptography) would
    triple the time `config show` takes."""
    return redact_config(path.read_text(encoding="utf-8")).text
