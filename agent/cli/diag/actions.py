"""`edge-agent diag flush|reconnect|reload`: the state-changing requests (root or service only)."""

from __future__ import annotations

import argparse

from agent.cli.diag.common import EXIT_OK, common_options, run_against_daemon


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    for name, text in (("flush", "seal the open window now and queue it for sending"),
                       ("reconnect", "drop the MQTT connection and reconnect"),
                       ("reload", "re-read the config file without a restart (as SIGHUP)")):
        parser = subparsers.add_parser(name, parents=[common_options()], help=text,
                                       description=f"Ask the agent to {text}. Needs root or "
                                                   "the service user.")
        parser.set_defaults(func=lambda args, name=name: run_against_daemon(
            args, name, lambda message: print(message) or EXIT_OK))
