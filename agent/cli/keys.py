"""`edge-agent keys`: the vehicle's Ed25519 signing key."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.wire.keys import generate_key_pair, key_id, load_public_key


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="make or inspect the vehicle signing key",
                                   description="Manage the vehicle's Ed25519 signing key.")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    gen = commands.add_parser(
        "gen", help="make a new key pair",
        description="Write a new Ed25519 private key (mode 0600) and its public key (.pub) "
                    "beside it. Give the .pub file to the backend.")
    gen.add_argument("--out", type=Path, default=Path("vehicle.key"),
                     help="private key path (default: %(default)s)")
    gen.add_argument("--force", action="store_true", help="replace an existing key")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(func=_do_gen)
    show = commands.add_parser("id", help="print the key id of a public key",
                               description="Print the key id (kid) a public key signs with.")
    show.add_argument("public_key", type=Path, help="the public key file (.pub)")
    show.set_defaults(func=_do_id)


def _do_gen(args: argparse.Namespace) -> int:
    public_path = generate_key_pair(args.out, overwrite=args.force)
    kid = key_id(load_public_key(public_path)).hex()
    if args.json:
        print(json.dumps({"private_key": str(args.out), "public_key": str(public_path),
                          "kid": kid}))
    else:
        print(f"private key: {args.out} (mode 0600, keep it on the vehicle)")
        print(f"public key:  {public_path} (give it to the backend)")
        print(f"key id:      {kid}")
    return 0


def _do_id(args: argparse.Namespace) -> int:
    print(key_id(load_public_key(args.public_key)).hex())
    return 0
