"""`edge-agent decode`: a CAN log decoded through DBC files, one JSON object per frame."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import can

from agent.decoding.dbc import load_dbc
from agent.errors import AgentError
from agent.sources.logfile import STDIN, read_frames


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decode", help="decode a candump/ASC/BLF log to JSON Lines",
        description="Decode every frame of a CAN log (candump .log, .asc, .blf, optionally "
                    ".gz) through DBC files and write one JSON object per frame: timestamp, "
                    "frame id, message name and signals. Frames the DBC does not know, or "
                    "cannot decode, get an \"error\" field and are counted on stderr.")
    parser.add_argument("--dbc", type=Path, action="append", required=True,
                        help="DBC file (repeat for several)")
    parser.add_argument("--raw", action="store_true",
                        help="raw integer values (no scaling, no enum names), as on the wire")
    parser.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    parser.add_argument("log", type=Path,
                        help="the log file, or - for candump -L text on stdin "
                             "(candump -L can0 | edge-agent decode --dbc X -)")
    parser.set_defaults(func=_do_decode)


def _do_decode(args: argparse.Namespace) -> int:
    database = load_dbc(args.dbc).database
    if args.log != STDIN and not args.log.is_file():
        raise AgentError(f"{args.log}: log file not found")
    try:
        reader = read_frames(args.log)
    except ValueError as exc:
        raise AgentError(f"{args.log}: {exc}") from exc
    out: TextIO = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    counts = {"frames": 0, "decoded": 0, "unknown_id": 0, "errors": 0}
    try:
        for frame in reader:
            counts["frames"] += 1
            record = _decode_frame(database, frame, raw=args.raw)
            counts["decoded" if "signals" in record else
                   "unknown_id" if record["error"] == "unknown frame id" else "errors"] += 1
            out.write(json.dumps(record, default=str) + "\n")
    finally:
        if args.output:
            out.close()
    print(json.dumps(counts), file=sys.stderr)
    return 0


def _decode_frame(database: Any, frame: can.Message, *, raw: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"t": frame.timestamp, "id": f"0x{frame.arbitration_id:X}",
                              "extended": frame.is_extended_id}
    if frame.is_error_frame or frame.is_remote_frame:
        record["error"] = "error frame" if frame.is_error_frame else "remote frame"
        return record
    try:
        message = database.get_message_by_frame_id(frame.arbitration_id)
    except KeyError:
        record["error"] = "unknown frame id"
        return record
    record["name"] = message.name
    try:
        record["signals"] = message.decode(bytes(frame.data), decode_choices=not raw,
                                           scaling=not raw)
    except Exception as exc:  # cantools raises several types on payloads it cannot read
        record["error"] = f"cannot decode: {exc}"
    return record
