"""`edge-agent config check FILE`: what a field tech runs before installing a config.

It validates the file as the agent loads it: the config, every source's DBCs (as strict as the
source asks) and the sampling plan. What the agent would refuse is a problem (exit 1); what it
would run with but log, such as overlapping DBC signals, is a warning (exit 0). It is stricter
than the agent about parts that would silently do nothing: a trigger on a signal no source
has is a problem (with the closest names), a sampling rule that matches nothing and triggers
while events are disabled are warnings (`--strict` makes every warning a problem). Every
problem found is reported, not only the first. Sampled signals that no privacy class rule
matches are listed too: they get `default_class` (by default `location`, the most protective),
so they are withheld below consent `full`.

A valid file ends with its plan summary (`PlanSummary`): what the agent would sample, per
source and mode, the frame IDs its kernel filters let through, the upload it would make and
the look-back its ring would hold.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from agent.cli import config_reset
from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM
from agent.cli.source_databases import read_databases
from agent.config.schema import AgentConfig, EventsConfig, load_config
from agent.decoding.tables import DbcTables
from agent.errors import AgentError, ConfigProblems
from agent.privacy.consent import classifier_for
from agent.sampling.plan import SamplingPlan, build_plan, source_signals
from agent.sources.catalogue import Catalogue
from agent.sources.registry import is_value_source

# Payload bytes per sample, signed envelope included: tools/bench's measured figure for 800
# signals at 1 Hz (bench/RESULTS.md, "Payload per sample"; 0.21 on the bundled drive).
BYTES_PER_SAMPLE = 0.2617
# agent/sampling/ring.py's record size, copied: importing the ring imports numpy, a tenth of a
# second of a check that needs none of it (tests/unit/cli/test_lazy_imports.py keeps them equal).
RING_BYTES_PER_RECORD = 19
HOURS_PER_DAY = 1.0
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class SourcePlan:
    source: str
    signals: int
    modes: dict[str, int]  # signals per sampling mode
    frame_ids: list[str] | None  # what the kernel filter lets through; None: not a CAN bus


@dataclass(frozen=True)
class PlanSummary:
    """What a valid config would make the agent do, in figures a person can check."""

    sources: list[SourcePlan]
    samples_per_s: float  # an upper bound: a `change` or `bounded` signal at every period
    bytes_per_sample: float
    mb_per_month: float  # at HOURS_PER_DAY of driving a day, DAYS_PER_MONTH days
    ring_records: int
    ring_records_per_s: float  # a value is one record, a stats sample four
    ring_lookback_s: float | None  # None: the plan writes nothing


def plan_summary(config: AgentConfig, plan: SamplingPlan) -> PlanSummary:
    sources = []
    for source in config.sources:
        planned = plan.for_source(source.name)
        modes: dict[str, int] = {}
        for signal in planned:
            modes[signal.mode] = modes.get(signal.mode, 0) + 1
        frames = (None if is_value_source(source) else
                  [f"0x{frame_id:X}" for frame_id in sorted(plan.frame_ids(source.name))])
        sources.append(SourcePlan(source.name, len(planned), modes, frames))
    samples = sum(1000 / signal.period_ms for signal in plan.signals)
    records = sum(1000 / signal.period_ms * (4 if signal.mode == "stats" else 1)
                  for signal in plan.signals)
    capacity = max(1, int(config.ring.memory_mb * 1024 * 1024 // RING_BYTES_PER_RECORD))
    seconds = HOURS_PER_DAY * 3600 * DAYS_PER_MONTH
    return PlanSummary(sources, round(samples, 1), BYTES_PER_SAMPLE,
                       round(samples * seconds * BYTES_PER_SAMPLE / 1e6, 2), capacity,
                       round(records, 1), round(capacity / records, 1) if records else None)


@dataclass(frozen=True)
class ConfigCheck:
    """The verdict on a config file."""

    problems: list[str]  # what makes the agent refuse it, or part of it do nothing
    warnings: list[str]  # what the agent would log running it
    unclassified: list[str]  # sampled signals no privacy class rule matches
    summary: PlanSummary | None  # None: no plan could be built


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


def check_config(path: Path, *, strict: bool = False) -> ConfigCheck:
    """The verdict on the file at `path` (warnings are one per overlapping DBC signal pair,
    say); with `strict`, every warning is a problem."""
    found = _check(path)
    if not strict:
        return found
    return ConfigCheck(found.problems + found.warnings, [], found.unclassified, found.summary)


def _check(path: Path) -> ConfigCheck:
    try:
        config = load_config(path)
    except ConfigProblems as exc:
        return ConfigCheck(list(exc.problems), [], [], None)
    except AgentError as exc:
        return ConfigCheck([str(exc)], [], [], None)
    problems: list[str] = []
    warnings: list[str] = []
    databases: dict[str, DbcTables | Catalogue] = {}
    for read in read_databases(config):
        if read.database is None:
            problems.append(f"dbc {read.name}: {read.error}")
            continue
        databases[read.name] = read.database
        if read.dbc is not None:
            warnings += [f"dbc {read.name}: {warning}" for warning in read.dbc.warnings]
    if problems:  # names checked against a missing DBC would mislead
        return ConfigCheck(problems, warnings, [], None)
    summary = None
    unclassified: list[str] = []
    try:
        plan = build_plan(config.sampling, databases)
    except AgentError as exc:
        problems.append(f"sampling plan: {exc}")
    else:
        warnings += [f"sampling plan: rule {match!r} matches no signal of any source"
                     for match in plan.unmatched]
        summary = plan_summary(config, plan)
        unclassified = classifier_for(config.privacy).unclassified(
            signal.key for signal in plan.signals)
    event_problems, event_warnings = check_events(config.events, databases)
    return ConfigCheck(problems + event_problems, warnings + event_warnings, unclassified,
                       summary)


def check_events(events: EventsConfig,
                 databases: Mapping[str, DbcTables | Catalogue]) -> tuple[list[str], list[str]]:
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
    types = None
    for trigger in events.triggers:
        where = f"events.triggers {trigger.name!r}"
        if trigger.when:
            from agent.events.expression import ExpressionError, SignalType, check

            if types is None:
                types = {signal.key: SignalType(signal.choices)
                         for source, database in databases.items()
                         for signal in source_signals(source, database)}
            try:
                check(trigger.when, types)
            except ExpressionError as exc:
                problems.append(f"{where}: when: {exc}")
        elif trigger.signal not in known:
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
    found = check_config(args.file, strict=getattr(args, "strict", False))
    problems, warnings, unclassified = found.problems, found.warnings, found.unclassified
    summary = None if problems else found.summary  # the agent would not run it
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": not problems, "problems": problems,
                          "warnings": warnings, "unclassified": unclassified,
                          "plan": None if summary is None else asdict(summary)}))
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
        if summary is not None:
            print(render_summary(summary))
    return EXIT_PROBLEM if problems else EXIT_OK


def render_summary(summary: PlanSummary) -> str:
    lines = ["plan:"]
    for source in summary.sources:
        modes = ", ".join(f"{count} {mode}" for mode, count in sorted(source.modes.items()))
        frames = ("" if source.frame_ids is None else
                  f"; {len(source.frame_ids)} frame IDs let through the kernel filter")
        lines.append(f"  {source.source}: {source.signals} signals"
                     f"{f' ({modes})' if modes else ''}{frames}")
    lines.append(f"  upload: about {summary.mb_per_month:.1f} MB a month at "
                 f"{HOURS_PER_DAY:g} h a day ({summary.samples_per_s:g} samples/s at most, "
                 f"{summary.bytes_per_sample} B per sample as measured in bench/RESULTS.md)")
    lookback = ("nothing to hold" if summary.ring_lookback_s is None else
                f"{summary.ring_lookback_s:.0f} s of look-back")
    lines.append(f"  ring: {summary.ring_records} records, {lookback} at "
                 f"{summary.ring_records_per_s:g} records/s")
    return "\n".join(lines)
