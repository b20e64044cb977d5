"""The backend side of fetch on demand (`tools/fetch-request`): sign a request for a vehicle's
ring look-back and publish it on `{prefix}/{vehicle}/fetch`, then print the vehicle's ack.

    tools/fetch-request --signing-key backend.key --vehicle demo-0001 \\
        --signals 'can0.BMS_*' --last 60s --host broker --ca-cert ca.crt --cert backend.crt \\
        --key backend-tls.key --wait-ack 30

The samples arrive as a `fetch` event on the events lane: `tools/backend` verifies, decodes and
shows or stores it like any event (docs/fetch.md). `--output FILE` writes the signed request
instead of (or besides, with --host) publishing it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.events.fetch import CONTENT_TYPE, MAX_SAMPLES, sign_fetch
from agent.wire.cose import Signer
from agent.wire.keys import load_private_key
from fleet.config_signing import parse_duration
from fleet.vehicle_commands import publish_and_wait


def publish_request(args: argparse.Namespace, envelope: bytes) -> dict[str, Any] | None:
    """Publish at QoS 1, not retained (a request is for now: a vehicle that connects later
    must not act on it); with --wait-ack, the vehicle's ack."""
    delivery = publish_and_wait(args, "fetch-request", "fetch", {args.vehicle: envelope},
                                retain=False)
    if delivery.missing:
        raise AgentError(f"no ack from {args.vehicle} within {args.wait_ack:g} s (is it "
                         "online? a request is not kept for vehicles offline)")
    return delivery.acks[0] if delivery.acks else None


def _do_fetch(args: argparse.Namespace) -> int:
    now = int(time.time())
    span: dict[str, int] = ({"last_ms": args.last * 1000} if args.last is not None
                            else {"from_ms": args.from_ms, "to_ms": args.to_ms})
    envelope = sign_fetch(Signer(load_private_key(args.signing_key), CONTENT_TYPE),
                          vehicle=args.vehicle, signals=args.signals, issued_at=now,
                          expires_at=now + args.expires_in, max_samples=args.max_samples,
                          **span)
    if args.output:
        args.output.write_bytes(envelope)
    if args.host is None:
        return 0
    ack = publish_request(args, envelope)
    if ack is not None:
        print(json.dumps(ack), flush=True)
        return 0 if ack.get("outcome") == "accepted" else 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/fetch-request",
        description="Ask a vehicle to upload its ring's look-back for some signals now: sign "
                    "a request with a backend key pinned in the vehicle's [ota] trusted_keys "
                    "and publish it to {prefix}/{vehicle}/fetch (QoS 1, not retained).")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--signing-key", type=Path, required=True,
                        help="backend private key (Ed25519, as for tools/config-sign)")
    parser.add_argument("--vehicle", required=True, help="the one vehicle to ask")
    parser.add_argument("--signals", nargs="+", required=True, metavar="GLOB",
                        help="signal keys or globs, e.g. 'can0.BMS_*'")
    span = parser.add_mutually_exclusive_group(required=True)
    span.add_argument("--last", type=parse_duration,
                      help="look-back up to the newest sample the vehicle holds (e.g. 60s, 5m)")
    span.add_argument("--from-ms", type=int, help="range start, Unix ms (with --to-ms)")
    parser.add_argument("--to-ms", type=int, help="range end, Unix ms")
    parser.add_argument("--max-samples", type=int, default=MAX_SAMPLES,
                        help=f"cap on samples sent, newest kept (at most {MAX_SAMPLES})")
    parser.add_argument("--expires-in", type=parse_duration, default=parse_duration("5m"),
                        help="how long the vehicle may act on it (default 5m, at most 1d)")
    parser.add_argument("--output", "-o", type=Path, help="also write the signed request here")
    parser.add_argument("--host", help="broker; without it the request is only written")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--ca-cert", type=Path, help="CA certificate of the broker")
    parser.add_argument("--cert", type=Path, help="backend client certificate")
    parser.add_argument("--key", type=Path, help="backend client TLS private key")
    parser.add_argument("--plaintext", action="store_true", help="no TLS (tests, demos)")
    parser.add_argument("--prefix", default="fleet")
    parser.add_argument("--wait-ack", type=float, metavar="SECONDS", default=30.0,
                        help="wait this long for the ack and print it (0: do not wait)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.from_ms is not None and args.to_ms is None:
        parser.error("--from-ms needs --to-ms")
    if args.host is None and args.output is None:
        parser.error("give --host to publish, --output to write the request, or both")
    if args.host is not None and not args.plaintext and not all(
            (args.ca_cert, args.cert, args.key)):
        parser.error("TLS needs --ca-cert, --cert and --key (or --plaintext)")
    try:
        return _do_fetch(args)
    except (AgentError, OSError, ValueError) as exc:
        print(f"fetch-request: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
