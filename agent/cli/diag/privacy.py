"""`edge-agent diag privacy` and `edge-agent diag consent LEVEL`: what the owner allows.

`privacy` shows the consent in force (who decided it, its version), what it keeps on the
vehicle, and the events found, sent and withheld. `consent LEVEL` is the owner's local
decision (root or the service user only): recorded with a version above the one in force and
applied from the next window, spooled batches included (docs/privacy.md).
"""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.diag.common import EXIT_OK, common_options, console, run_against_daemon
from agent.config.schema import CONSENT_LEVELS


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "privacy", parents=[common_options()], help="consent in force and what it keeps local",
        description="The owner's consent level, its version and who set it, the signals sent "
                    "and kept on the vehicle, position controls and events.")
    parser.set_defaults(func=lambda args: run_against_daemon(args, "privacy", render))
    consent = subparsers.add_parser(
        "consent", parents=[common_options()], help="set the owner's consent level",
        description="Set the consent level locally (root or the service user). A lower level "
                    "applies from the next window and drops spooled batches sealed under a "
                    "higher one.")
    consent.add_argument("level", choices=CONSENT_LEVELS,
                         help="the consent level: " + ", ".join(CONSENT_LEVELS))
    consent.set_defaults(func=lambda args: run_against_daemon(
        args, "consent", lambda message: print(message) or EXIT_OK, level=args.level))


def render(privacy: dict[str, Any]) -> int:
    from rich.markup import escape

    out = console()
    out.print(f"consent {privacy['consent']} (version {privacy['version']}, set by "
              f"{privacy['decided_by']}): sends {', '.join(privacy['classes_allowed']) or 'no'} "
              "signals")
    out.print(f"{privacy['signals_sent']} signals sent, {privacy['signals_kept_local']} read "
              f"on the vehicle only; {privacy['dropped_on_downgrade']} spooled batches dropped "
              "by a downgrade")
    position = privacy["position"]
    tracks = "on" if position["tracks"] else "off"
    precision = f"{position['precision_m']:g} m" if position["precision_m"] else "full"
    out.print(f"position {escape(' / '.join(position['signals']))}: precision "
              f"{precision}, tracks {tracks}, zones "
              f"{escape(', '.join(position['zones'])) or 'none'}; pseudonym "
              f"{'on' if privacy['pseudonym'] else 'off'}")
    events = privacy["events"]
    out.print(f"events: detectors {', '.join(events['detectors']) or 'none'}; found "
              f"{_counts(events['found'])}; {events['sent']} sent; withheld "
              f"{_counts(events['withheld'])}; {events['positions_withheld']} positions and "
              f"{events.get('samples_withheld', 0)} captured position samples withheld")
    return EXIT_OK


def _counts(counts: dict[str, int]) -> str:
    """`trip_start 1, stop 2` (or `none`) for a person, never a Python dict."""
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"
