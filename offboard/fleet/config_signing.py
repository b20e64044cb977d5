"""The backend side of config updates: `sign` a TOML config, `publish` it retained over MQTT.

    python -m fleet.config_signing sign --key backend.key --vehicle demo-0001 --version 7 \\
        --expires-in 7d update.toml -o update.cose
    python -m fleet.config_signing publish --host broker --ca-cert ... --vehicle demo-0001 \\
        update.cose --wait-ack 60

(tools/config-sign and tools/config-publish run these.) A backend key is an Ed25519 key pair
made with `edge-agent keys gen --out backend.key`; vehicles pin backend.pub in [ota].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.ota.update import CONTENT_TYPE, DbcEntry, sign_update
from agent.wire.cose import Signer
from agent.wire.keys import load_private_key
from fleet.vehicle_commands import publish_and_wait

log = logging.getLogger(__name__)

DURATION = re.compile(r"^(\d+)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use seconds or e.g. 90m, 12h, 7d")
    return int(match.group(1)) * UNITS[match.group(2)]


def dbc_entries(config_text: str, config_dir: Path, files: dict[str, Path],
                embed: bool) -> dict[str, DbcEntry]:
    """A digest (and with `embed` the content) for every DBC the config's sources name.

    A name is looked up in `files` (NAME=FILE options), else relative to the config's folder.
    """
    entries = {}
    for source in tomllib.loads(config_text).get("sources", []):
        for name in source.get("dbc", []):
            path = files.get(name) or (config_dir / name)
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise AgentError(f"{path}: cannot read the DBC the config names as {name!r} "
                                 f"({exc.strerror}); give it with --dbc {name}=FILE") from exc
            entries[name] = DbcEntry(hashlib.sha256(content).digest(),
                                     content if embed else None)
    return entries


def _do_sign(args: argparse.Namespace) -> int:
    config_text = args.config.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise AgentError(f"{args.config}: not valid TOML: {exc}") from exc
    if document.get("version", args.version) != args.version:
        raise AgentError(f"{args.config}: version = {document['version']} but --version is "
                         f"{args.version}")
    files = {}
    for spec in args.dbc:
        name, _, location = spec.partition("=")
        files[name] = Path(location)
    signer = Signer(load_private_key(args.key), CONTENT_TYPE)
    envelope = sign_update(
        signer, version=args.version, config_text=config_text,
        expires_at=int(time.time()) + args.expires_in,
        vehicle=args.vehicle, group=args.group,
        dbc=dbc_entries(config_text, args.config.parent, files, args.embed_dbc))
    output = args.output or args.config.with_suffix(".cose")
    output.write_bytes(envelope)
    print(json.dumps({"file": str(output), "bytes": len(envelope), "version": args.version,
                      "target": {"vehicle": args.vehicle} if args.vehicle
                      else {"group": args.group}, "kid": signer.kid.hex()}))
    return 0


def _do_publish(args: argparse.Namespace) -> int:
    payload = b"" if args.clear else args.update.read_bytes()

    def show(ack: dict[str, Any]) -> None:
        print(json.dumps(ack), flush=True)

    delivery = publish_and_wait(args, "config-publish", "config",
                                dict.fromkeys(args.vehicle, payload), retain=True, on_ack=show)
    if delivery.missing:
        print(f"config-publish: no ack from {sorted(delivery.missing)} within "
              f"{args.wait_ack:g} s", file=sys.stderr)
        return 1
    return 0 if all(ack.get("outcome") == "applied" for ack in delivery.acks) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleet.config_signing",
                                     description="Sign and publish vehicle config updates.")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # tools/config-sign and tools/config-publish call these subcommands directly.
    sign = commands.add_parser(
        "sign", prog="tools/config-sign",
        help="sign a TOML config for a vehicle or a group",
        description="Sign a TOML config (laid over each vehicle's local config.toml) with a "
                    "backend key. DBC files its [[sources]] name are referenced by SHA-256, "
                    "or delivered inside the update with --embed-dbc.")
    sign.add_argument("config", type=Path, help="the TOML to send")
    sign.add_argument("--key", type=Path, required=True, help="backend private key")
    sign.add_argument("--version", type=int, required=True,
                      help="config version: above every version sent before, at most "
                           "2**53 - 1 (docs/ota.md)")
    target = sign.add_mutually_exclusive_group(required=True)
    target.add_argument("--vehicle", help="the one vehicle this update is for")
    target.add_argument("--group", help="the group ([vehicle] groups) this update is for")
    sign.add_argument("--expires-in", type=parse_duration, default=parse_duration("7d"),
                      help="how long vehicles may accept it (e.g. 12h, 7d; default 7d)")
    sign.add_argument("--embed-dbc", action="store_true",
                      help="deliver the DBC files inside the update")
    sign.add_argument("--dbc", action="append", default=[], metavar="NAME=FILE",
                      help="where the DBC the config names NAME is on this machine")
    sign.add_argument("--output", "-o", type=Path, help="default: CONFIG with suffix .cose")
    sign.set_defaults(func=_do_sign)
    publish = commands.add_parser(
        "publish", prog="tools/config-publish",
        help="publish a signed update retained to vehicles' config topics",
        description="Publish retained at QoS 1 to {prefix}/{vehicle}/config for each "
                    "--vehicle; with --wait-ack, print each vehicle's ack as JSON and exit 0 "
                    "only if every one says applied.")
    publish.add_argument("update", type=Path, nargs="?", help="the .cose file from `sign`")
    publish.add_argument("--vehicle", action="append", required=True,
                         help="a vehicle id (repeat for each vehicle of a group)")
    publish.add_argument("--host", default="localhost")
    publish.add_argument("--port", type=int, default=8883)
    publish.add_argument("--ca-cert", type=Path, help="CA certificate of the broker")
    publish.add_argument("--cert", type=Path, help="backend client certificate")
    publish.add_argument("--key", type=Path, help="backend client private key")
    publish.add_argument("--plaintext", action="store_true", help="no TLS (tests, demos)")
    publish.add_argument("--prefix", default="fleet")
    publish.add_argument("--wait-ack", type=float, metavar="SECONDS",
                         help="wait this long for every vehicle's ack")
    publish.add_argument("--clear", action="store_true",
                         help="remove the retained update instead (vehicles keep their config)")
    publish.set_defaults(func=_do_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "publish" and args.update is None and not args.clear:
        print("config-publish: give the .cose file (or --clear)", file=sys.stderr)
        return 2
    if args.command == "publish" and not args.plaintext and not all(
            (args.ca_cert, args.cert, args.key)):
        print("config-publish: TLS needs --ca-cert, --cert and --key (or --plaintext)",
              file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (AgentError, OSError) as exc:
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
