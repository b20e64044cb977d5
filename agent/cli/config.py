"""`edge-agent config check FILE`: what a field tech runs before installing a config.

It validates the file as the agent loads it: the config, every source's DBCs (as strict as the
source asks) and the sampling plan. What the agent would refuse is a problem (exit 1); what it
would run with but log, such as overlapping DBC signals, is a warning (exit 0). Sampled
signals that no privacy class rule matches are listed too: they get `default_class` (by
default `location`, the most protective), so they are withheld below consent `full`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cantools.database.can import Database

from agent.cli import config_reset
from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM
from agent.config.schema import load_config
from agent.decoding.dbc import load_source_dbc
from agent.errors import AgentError
from agent.privacy.consent import classifier_for
from agent.sampling.plan import build_plan
from agent.sources.catalogue import Catalogue
from agent.sources.registry import catalogue_for, is_value_source


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="check a config file, or reset the anti-rollback floor",
        description="Validate a config file exactly as the agent (and an OTA update) would.")
    actions = parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate FILE, DBCs included; exit 1 if invalid")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(func=do_check)
    config_reset.add_action(actions)


def check_config(path: Path) -> tuple[list[str], list[str], list[str]]:
    """The problems that make the agent refuse the file at `path`, the warnings it would
    log running it (one per overlapping DBC signal pair, say), and the sampled signals no
    privacy class rule matches."""
    try:
        config = load_config(path)
    except AgentError as exc:
        return [str(exc)], [], []
    problems: list[str] = []
    warnings: list[str] = []
    databases: dict[str, Database | Catalogue] = {}
    for source in config.sources:
        if is_value_source(source):
            databases[source.name] = catalogue_for(source)
            continue
        try:
            loaded = load_source_dbc(source)
        except AgentError as exc:
            problems.append(f"dbc {source.name}: {exc}")
            continue
        databases[source.name] = loaded.database
        warnings += [f"dbc {source.name}: {warning}" for warning in loaded.warnings]
    unclassified: list[str] = []
    if not problems:
        try:
            plan = build_plan(config.sampling, databases)
        except AgentError as exc:
            problems.append(f"sampling plan: {exc}")
        else:
            unclassified = classifier_for(config.privacy).unclassified(
                s.key for s in plan.signals)
    return problems, warnings, unclassified


def do_check(args: argparse.Namespace) -> int:
    problems, warnings, unclassified = check_config(args.file)
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": not problems, "problems": problems,
                          "warnings": warnings, "unclassified": unclassified}))
    else:
        for problem in problems:
            print(f"invalid: {problem}", file=sys.stderr)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if unclassified:
            print(f"privacy: {len(unclassified)} sampled signals match no class rule and get "
                  "[privacy] default_class (default: location, withheld below consent full); "
                  "give them a [[privacy.classes]] rule (docs/privacy.md):", file=sys.stderr)
            for key in unclassified:
                print(f"unclassified: {key}", file=sys.stderr)
        if not problems:
            print(f"{args.file}: valid" + (f" ({len(warnings)} warnings above)"
                                           if warnings else ""))
    return EXIT_PROBLEM if problems else EXIT_OK
