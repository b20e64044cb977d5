"""`edge-agent privacy erase`: destroy every key that seals spooled data, and the data.

The running agent is asked to do it (it holds the keys in memory, so only it can forget them
for good); when no agent answers, the state folder is erased directly. Either way the keys
go first: what a copy of the card taken before the erase holds cannot be opened after it.
"""

from __future__ import annotations

import argparse
import json
import sys

from agent.cli.diag.common import EXIT_OK, EXIT_PROBLEM, ask, common_options
from agent.config.schema import load_config
from agent.output.spool import SPOOL_FILE, Spool
from agent.privacy.at_rest import AtRest
from agent.runtime.control import ControlRefused, ControlUnavailable


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "privacy", help="erase the data the vehicle holds for the owner",
        description="Owner privacy actions on the vehicle (docs/privacy.md).")
    actions = parser.add_subparsers(dest="privacy_action", required=True, metavar="ACTION")
    erase = actions.add_parser(
        "erase", parents=[common_options()],
        help="destroy the spool keys and every spooled batch and event",
        description="Destroy every at-rest key and drop every batch and event waiting in the "
                    "spool (root or the service user). Through the running agent, else "
                    "directly in the state folder.")
    erase.set_defaults(func=_do_erase)


def _do_erase(args: argparse.Namespace) -> int:
    try:
        result = ask(args, "erase")
        result["by"] = "agent"
    except ControlRefused as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except ControlUnavailable:
        result = erase_offline(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"erased ({'by the running agent' if result['by'] == 'agent' else 'offline'}): "
              f"keys destroyed: {', '.join(result['keys_destroyed']) or 'none'}; "
              f"{result['dropped']} spooled batches and events dropped")
    return EXIT_OK


def erase_offline(args: argparse.Namespace) -> dict[str, object]:
    """No agent running: destroy the key files, then drop the rows (secure_delete zeroes
    them; the spool file stays, empty, for the agent's next start). The spool is opened
    first, so that rows an older version kept in plaintext are sealed before the keys go."""
    config = load_config(args.config)
    at_rest = AtRest(config.state.directory)
    path = config.state.directory / SPOOL_FILE
    spool = (Spool(path, int(config.spool.max_mb * 2**20), at_rest=at_rest)
             if path.exists() else None)
    try:
        destroyed = at_rest.forget_above(-1)
        dropped = spool.drop_above(-1) if spool is not None else 0
    finally:
        if spool is not None:
            spool.close()
    return {"keys_destroyed": destroyed, "dropped": dropped, "by": "offline"}
