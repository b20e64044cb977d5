"""`edge-agent diag selftest`: offline checks of the installation, plus the daemon if running."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rich.markup import escape
from rich.table import Table

from agent.cli.diag.checks import Check, run_checks
from agent.cli.diag.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    ask,
    common_options,
    console,
    unreachable,
)
from agent.runtime.control import ControlUnavailable

STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "selftest", parents=[common_options()], help="check config, DBC, keys, certs, clock, "
        "disk, broker", description="Run the installation checks (they work with the agent "
        "stopped) and report whether the agent is running. Exit 1 if any check fails.")
    parser.add_argument("--no-network", action="store_true", help="skip the broker check")
    parser.set_defaults(func=_do_selftest)


def daemon_check(args: argparse.Namespace) -> Check:
    try:
        document = ask(args, "status")
    except ControlUnavailable as exc:  # not running, or this user may not ask it
        return Check("daemon", "warn", unreachable(args, exc)["error"])
    return Check("daemon", "ok" if not document["warnings"] else "warn",
                 f"running, up {document['uptime_s']:.0f} s, {len(document['warnings'])} "
                 "warnings (see diag status)")


def _do_selftest(args: argparse.Namespace) -> int:
    checks = [*run_checks(args.config, network=not args.no_network), daemon_check(args)]
    failed = any(check.verdict == "fail" for check in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        table = Table("check", "verdict", "detail")
        for check in checks:
            table.add_row(escape(check.name), STYLE[check.verdict], escape(check.detail))
        console().print(table)
    return EXIT_PROBLEM if failed else EXIT_OK
