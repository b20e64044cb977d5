"""`edge-agent diag uplink`: connection state, and a live connectivity and TLS test."""

from __future__ import annotations

import argparse
import json

from rich.markup import escape

from agent.cli.diag.checks import broker_check
from agent.cli.diag.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    age,
    ask,
    common_options,
    console,
    unreachable,
)
from agent.config.schema import load_config
from agent.errors import AgentError
from agent.runtime.control import ControlUnavailable


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "uplink", parents=[common_options()], help="MQTT connection state and a TLS test",
        description="The agent's MQTT connection as it sees it, then a test connection with "
                    "the vehicle's certificate and a plain verdict.")
    parser.set_defaults(func=_do_uplink)


def _do_uplink(args: argparse.Namespace) -> int:
    try:
        state = ask(args, "status")["uplink"]
    except ControlUnavailable as exc:
        state = unreachable(args, exc)
    try:
        test = broker_check(load_config(args.config))
        verdict = {"verdict": test.verdict, "detail": test.detail}
    except AgentError as exc:
        verdict = {"verdict": "fail", "detail": f"cannot test: {exc}"}
    if args.json:
        print(json.dumps({"agent": state, "test": verdict}, indent=2))
    else:
        out = console()
        if "connected" in state:
            out.print(f"agent: {'connected' if state['connected'] else 'NOT connected'} to "
                      f"{state['host']}:{state['port']}, {state['acked']} acknowledged, last "
                      f"PUBACK {age(state['last_puback_age_s'])}, {state['connect_failures']} "
                      f"failed attempts, {state['refused']} refused by the broker")
        else:
            out.print(f"agent: {escape(state['error'])}")
        out.print(f"test:  {verdict['verdict'].upper()}: {escape(verdict['detail'])}")
    return EXIT_OK if verdict["verdict"] == "ok" else EXIT_PROBLEM
