"""`edge-agent verify`: prove a DBC and sampling plan on a recorded log before deploying."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.errors import AgentError

EXIT_SAME = 0
EXIT_DIFFERENT = 1


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="replay a log through the agent and compare every sample with cantools",
        description="Replay a CAN log (candump .log, .asc, .blf) through the agent's own "
                    "decoding and sampling (no broker: batches stay in a throwaway spool and "
                    "are decoded as the backend decodes them), and compare every sample with "
                    "cantools' decode of the newest frame before each tick. Prints compared, "
                    "mismatched, missing and extra samples per signal; exits 1 on any "
                    "difference, 0 when every sample is exact.")
    parser.add_argument("--dbc", type=Path, action="append", default=[],
                        help="DBC (or ARXML/KCD/SYM) file, repeat for several; with --config "
                             "it replaces the DBCs of every CAN source")
    parser.add_argument("--config", type=Path,
                        help="the agent's config: its sampling plan, windows and CAN sources "
                             "(each replays its `channel` of the log); without it, one source "
                             "can0 samples every signal of --dbc once a second")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="replay speed: 0 as fast as possible (default), 1 real time")
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    parser.add_argument("--all", action="store_true",
                        help="list every signal, not only those with differences")
    parser.add_argument("log", type=Path, help="the log file")
    parser.set_defaults(func=_do_verify)


def _do_verify(args: argparse.Namespace) -> int:
    from agent.runtime.verify import verify

    if not args.log.is_file():
        raise AgentError(f"{args.log}: log file not found")
    if args.speed < 0:
        raise AgentError("--speed must be 0 (as fast as possible) or more")
    report = verify(args.log, config_path=args.config, dbcs=args.dbc, speed=args.speed)
    totals = report.totals()
    if args.json:
        print(json.dumps({
            "ok": report.differences == 0, "frames": report.frames, "batches": report.batches,
            "speed": report.speed, **totals,
            "signals": {key: {"compared": r.compared, "mismatched": r.mismatched,
                              "missing": r.missing, "extra": r.extra, "examples": r.examples}
                        for key, r in sorted(report.signals.items())}}, indent=2))
    else:
        shown = [(key, r) for key, r in sorted(report.signals.items())
                 if args.all or r.differences]
        if shown:
            width = max(len(key) for key, _ in shown)
            print(f"{'signal':<{width}}  compared  mismatched  missing  extra")
            for key, r in shown:
                print(f"{key:<{width}}  {r.compared:>8}  {r.mismatched:>10}  {r.missing:>7}  "
                      f"{r.extra:>5}")
                for example in r.examples:
                    print(f"{'':<{width}}    {example['kind']} at {example['time_ms']} ms: "
                          f"cantools {example['cantools']}, agent {example['agent']}")
    verdict = "exact" if report.differences == 0 else "DIFFERENT"
    print(f"{verdict}: {len(report.signals)} signals, {totals['compared']} samples "
          f"compared, {totals['mismatched']} mismatched, {totals['missing']} missing, "
          f"{totals['extra']} extra ({report.frames} frames, {report.batches} batches, "
          f"speed {report.speed:g})", file=sys.stderr if args.json else sys.stdout)
    return EXIT_SAME if report.differences == 0 else EXIT_DIFFERENT
