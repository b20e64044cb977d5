"""`tools/backend dictionaries prune`: clear retained dictionaries that no batch needs any more.

Every vehicle keeps each signal dictionary it has used retained on
`{prefix}/{vehicle}/dictionary/{did}` (docs/wire-format.md §4.9); a vehicle whose plan
changed has several, and the broker keeps them all until someone clears them. A dictionary
is cleared (an empty retained message on its topic, which is how MQTT deletes one) when the
data set shows that it is no longer needed:

- it is not the dictionary of the vehicle's newest stored batch (its current one), and
- the newest stored batch of that vehicle decoded with it ended more than `--older-than`
  days ago, so no batch still in a spool is likely to need it.

A dictionary that no stored batch has used is kept: its batches may not have arrived yet.
Workers with a `--dictionary-cache` keep every dictionary they saw, so a late batch still
decodes there. The retained messages are read by subscribing and collecting until the broker
has sent nothing for `--settle` seconds (MQTT does not mark the end of the retained messages).
`--dry-run` lists what would be cleared.
"""

from __future__ import annotations

import argparse
import json
import queue
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import AgentError


@dataclass(frozen=True)
class Retained:
    topic: str
    vehicle: str
    did: str


def parse_topic(topic: str, prefix: str) -> Retained | None:
    """`{prefix}/{vehicle}/dictionary/{did}`, or None."""
    levels = topic[len(prefix) + 1:].split("/") if topic.startswith(prefix + "/") else []
    if len(levels) != 3 or levels[1] != "dictionary":
        return None
    return Retained(topic, levels[0], levels[2])


def usage(dataset: Path) -> tuple[dict[tuple[str, str], datetime], dict[str, str]]:
    """From the data set's `batches`: when each (vehicle, dictionary) was last used (the end of
    the newest batch decoded with it), and each vehicle's current dictionary."""
    if not any((dataset / "batches").rglob("*.parquet")):
        return {}, {}
    import duckdb

    from fleet.query import parquet_source

    connection = duckdb.connect()
    try:
        rows = connection.execute(f"""
            SELECT vehicle, dictionary_id, max(t1), max(t0)
            FROM {parquet_source(dataset, 'batches')} GROUP BY ALL""").fetchall()
    except duckdb.Error as exc:
        raise AgentError(f"{dataset}: cannot read the data set's batches ({exc})") from exc
    finally:
        connection.close()
    last_used = {(vehicle, did): end for vehicle, did, end, _ in rows}
    current: dict[str, tuple[datetime, str]] = {}
    for vehicle, did, _, start in rows:
        if vehicle not in current or start > current[vehicle][0]:
            current[vehicle] = (start, did)
    return last_used, {vehicle: did for vehicle, (_, did) in current.items()}


def to_clear(retained: Sequence[Retained], last_used: dict[tuple[str, str], datetime],
             current: dict[str, str], now: datetime, older_than: timedelta) -> list[Retained]:
    """The retained dictionaries that no batch needs any more (the rule in the docstring)."""
    stale = []
    for item in retained:
        used = last_used.get((item.vehicle, item.did))
        if used is None or current.get(item.vehicle) == item.did:
            continue
        if now - used > older_than:
            stale.append(item)
    return stale


def _client(args: argparse.Namespace) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if not args.plaintext:
        if not (args.ca_cert and args.cert and args.key):
            raise AgentError("TLS needs --ca-cert, --cert and --key (or --plaintext)")
        client.tls_set(ca_certs=str(args.ca_cert), certfile=str(args.cert),
                       keyfile=str(args.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return client


def read_retained(args: argparse.Namespace) -> list[Retained]:
    """Every retained dictionary under the prefix, as the broker holds them now."""
    client = _client(args)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client.on_connect = lambda c, u, f, reason, p: (
        events.put(("refused", str(reason))) if reason.is_failure
        else c.subscribe(f"{args.prefix}/+/dictionary/+", qos=1))
    client.on_subscribe = lambda c, u, mid, reasons, p: events.put(
        ("subscribed", [str(r) for r in reasons if r.is_failure]))
    client.on_message = lambda c, u, message: events.put(
        ("message", (message.topic, message.retain, len(message.payload))))
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        raise AgentError(f"cannot connect to {args.host}:{args.port}: {exc}") from exc
    client.loop_start()
    found: dict[str, Retained] = {}
    try:
        subscribed = False
        while True:
            try:
                kind, value = events.get(timeout=args.settle if subscribed else 15)
            except queue.Empty:
                if not subscribed:
                    raise AgentError(f"no answer from {args.host}:{args.port}") from None
                return sorted(found.values(), key=lambda item: item.topic)
            if kind == "refused" or (kind == "subscribed" and value):
                raise AgentError(f"the broker refused: {value}")
            subscribed = subscribed or kind == "subscribed"
            if kind == "message":
                topic, retain, size = value
                item = parse_topic(topic, args.prefix)
                if item is not None and retain and size:
                    found[topic] = item
    finally:
        client.disconnect()
        client.loop_stop()


def clear(args: argparse.Namespace, items: Sequence[Retained]) -> None:
    """An empty retained message on each topic (QoS 1, every PUBACK awaited)."""
    client = _client(args)
    connected: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda c, u, f, reason, p: connected.put(
        str(reason) if reason.is_failure else "")
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as exc:
        raise AgentError(f"cannot connect to {args.host}:{args.port}: {exc}") from exc
    client.loop_start()
    try:
        problem = connected.get(timeout=15)
        if problem:
            raise AgentError(f"the broker refused: {problem}")
        infos = [client.publish(item.topic, b"", qos=1, retain=True) for item in items]
        deadline = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise AgentError(f"the broker did not acknowledge clearing {len(infos)} "
                                 "dictionaries in time")
    finally:
        client.disconnect()
        client.loop_stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/backend dictionaries prune",
        description="Clear the retained signal dictionaries that no stored batch has needed "
                    "for --older-than days and that are no vehicle's current one.")
    parser.add_argument("--dataset", type=Path, required=True, metavar="DIR",
                        help="the workers' Parquet data set (which batch used which dictionary)")
    parser.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                        help="clear a dictionary last used longer ago than this (default: 30)")
    parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    parser.add_argument("--settle", type=float, default=2.0, metavar="SECONDS",
                        help="the retained messages are complete when the broker has sent "
                             "nothing for this long (default: 2)")
    parser.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument("--port", type=int, default=8883, help="broker port (default: 8883)")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate of the broker")
    parser.add_argument("--cert", type=Path, help="client certificate (may write the "
                                                  "vehicles' dictionary topics)")
    parser.add_argument("--key", type=Path, help="client private key")
    parser.add_argument("--plaintext", action="store_true",
                        help="connect without TLS (local tests only)")
    parser.add_argument("--prefix", default="fleet", help="topic prefix (default: fleet)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.older_than >= 0 or not args.settle > 0:
            raise AgentError("--older-than must be 0 or more days and --settle above 0")
        last_used, current = usage(args.dataset)
        retained = read_retained(args)
        stale = to_clear(retained, last_used, current, datetime.now(UTC),
                         timedelta(days=args.older_than))
        if stale and not args.dry_run:
            clear(args, stale)
    except AgentError as exc:
        print(f"backend dictionaries prune: error: {exc}", file=sys.stderr)
        return 2
    result = {"retained": len(retained), "cleared" if not args.dry_run else "would_clear":
              [item.topic for item in stale]}
    if args.json:
        print(json.dumps(result))
    else:
        verb = "would clear" if args.dry_run else "cleared"
        print(f"{len(retained)} retained dictionaries, {verb} {len(stale)}")
        for item in stale:
            print(f"  {item.topic}")
    return 0
