"""`edge-agent config check FILE`: what a field tech runs before installing a config.

It validates the file as the agent loads it: the config, every source's DBCs (as strict as the
source asks) and the sampling plan. What the agent would refuse is a problem (exit 1); what it
would run with but log, such as overlapping DBC signals, is a warning (exit 0). It is stricter
than the agent about parts that would silently do nothing: a trigger on a signal no source
has is a problem (with the closest names), a sampling rule that matches nothing and triggers
while events are disabled are warnings (`--strict` makes every warning a problem). Every
problem found is reported, not only the first.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path

from cantools.database.can import Database

from agent.cli import config_reset
from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM
from agent.config.schema import EventsConfig, load_config
from agent.decoding.dbc import load_source_dbc
from agent.errors import AgentError, ConfigProblems
from agent.sampling.plan import build_plan, source_signals
from agent.sources.catalogue import Catalogue
from agent.sources.registry import catalogue_for, is_value_source


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="check a config file, or reset the anti-rollback floor",
        description="Validate a config file exactly as the agent (and an OTA update) would.")
    actions = parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate FILE, DBCs included; exit 1 if invalid")
    check.add_argument("file", type=Path, help="the config file to check")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.add_argument("--strict", action="store_true",
                       help="treat warnings (a sampling rule matching nothing, say) as problems")
    check.set_defaults(func=do_check)
    config_reset.add_action(actions)


def check_config(path: Path, *, strict: bool = False) -> tuple[list[str], list[str]]:
    """The problems that make the agent refuse the file at `path` (or make part of it do
    nothing), and the warnings it would log running it (one per overlapping DBC signal pair,
    say); with `strict`, every warning is a problem."""
    problems, warnings = _check(path)
    return (problems + warnings, []) if strict else (problems, warnings)


def _check(path: Path) -> tuple[list[str], list[str]]:
    try:
        config = load_config(path)
    except ConfigProblems as exc:
        return list(exc.problems), []
    except AgentError as exc:
        return [str(exc)], []
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
    if problems:
        return problems, warnings  # names checked against a missing DBC would mislead
    try:
        plan = build_plan(config.sampling, databases)
    except AgentError as exc:
        problems.append(f"sampling plan: {exc}")
    else:
        warnings += [f"sampling plan: rule {match!r} matches no signal of any source"
                     for match in plan.unmatched]
    event_problems, event_warnings = check_events(config.events, databases)
    return problems + event_problems, warnings + event_warnings


def check_events(events: EventsConfig,
                 databases: Mapping[str, Database | Catalogue]) -> tuple[list[str], list[str]]:
    """Triggers on signals no source has (problems, with the closest names), captures that
    match nothing and triggers that cannot fire because events are disabled (warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    if events.triggers and not events.enabled:
        warnings.append(f"events: {len(events.triggers)} [[events.triggers]] set but [events] "
                        "enabled = false: they never fire")
    keys = [signal.key for source, database in databases.items()
            for signal in source_signals(source, database)]
    known = set(keys)
    for trigger in events.triggers:
        where = f"events.triggers {trigger.name!r}"
        if trigger.signal not in known:
            close = difflib.get_close_matches(trigger.signal, keys, n=3, cutoff=0.6)
            hint = (f" (did you mean {' or '.join(repr(key) for key in close)}?)" if close
                    else " (signals are <source>.<Message>.<Signal>)")
            problems.append(f"{where}: signal {trigger.signal!r} is not a signal of any "
                            f"source{hint}")
        for pattern in trigger.capture:
            if not any(fnmatchcase(key, pattern) for key in keys):
                warnings.append(f"{where}: capture {pattern!r} matches no signal of any source")
    return problems, warnings


def do_check(args: argparse.Namespace) -> int:
    problems, warnings = check_config(args.file, strict=getattr(args, "strict", False))
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": not problems, "problems": problems,
                          "warnings": warnings}))
    else:
        for problem in problems:
            print(f"invalid: {problem}", file=sys.stderr)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not problems:
            print(f"{args.file}: valid" + (f" ({len(warnings)} warnings above)"
                                           if warnings else ""))
    return EXIT_PROBLEM if problems else EXIT_OK
