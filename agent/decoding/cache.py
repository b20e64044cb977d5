"""Parsed DBCs on disk, by content digest: a restart (and every CLI check) skips cantools' parser.

cantools' DBC parser takes ~0.2 s for the bundled 931-signal file, the largest part of the
agent's start-up. What the agent reads from a parsed database is small: per message its frame
ID, name, length, frame type and signals; per signal its bit layout, conversion (scale,
offset, float, choices), limits, unit and multiplexing. Those are kept here as JSON, our own
tables, and cantools' `Message` and `Signal` objects are built from them directly: the same
constructors the DBC loader calls, so cantools builds the same codecs and decodes alike. JSON,
not pickle: an entry someone tampered with can give wrong tables at worst, never run code
(and the folder is the state folder's, private to the agent's user).

An entry is named by the SHA-256 of the DBC bytes, their formats, the cantools version and
`FORMAT`; the entry repeats that key, and one that is unreadable, malformed or for another key
is ignored (logged at debug) and written anew. A folder this process cannot read or write
means no cache, never an error: `edge-agent config check` run by another user than the
agent's still works, it only parses. Only the owner of the folder writes into it, so the
entries stay the agent's user's; other users read them where they can.

What a cached database lacks: DBC attributes, comments, nodes, senders, receivers, signal
groups and the database's version. The agent reads none of them. Only DBC files are cached;
ARXML, KCD and SYM carry more (containers, end-to-end protection) and are always parsed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cantools
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.namedsignalvalue import NamedSignalValue

from agent.runtime.files import atomic_write

log = logging.getLogger(__name__)

# Raise when the tables below change shape or meaning: older entries are then ignored.
FORMAT = 1
# Entries kept; the oldest (by last write) go first. A vehicle runs one or two DBC sets and an
# OTA update brings a new one now and then.
KEPT = 8
SUFFIX = ".dbc.json"

# A layout warning as the cache keeps it: (index of its file, message, frame ID, signals,
# message length); agent/decoding/dbc.py turns it back into a LayoutWarning.
CachedWarning = tuple[int, str, int, tuple[str, ...], int]


@dataclass(frozen=True)
class DbcCache:
    """The cache folder (None: no cache)."""

    folder: Path | None

    @classmethod
    def in_state(cls, state_directory: Path) -> DbcCache:
        """The cache of an agent whose state folder is `state_directory`: its `cache` folder."""
        return cls(state_directory / "cache")

    def get(self, key: str, files: int) -> tuple[Database, tuple[CachedWarning, ...]] | None:
        """The database and warnings of `files` DBC files cached under `key`, or None (missing
        or unusable)."""
        if self.folder is None:
            return None
        path = self.folder / f"{key}{SUFFIX}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.debug("DBC cache: cannot read %s (%s): parsing instead", path, exc)
            return None
        try:
            return decode(data, key, files)
        except Exception as exc:  # anything a damaged entry makes json or cantools raise
            log.debug("DBC cache: ignoring %s (%s): parsing instead", path, exc)
            return None

    def put(self, key: str, database: Database, warnings: Sequence[CachedWarning]) -> None:
        """Keep `database` under `key`, if this process owns (or may make) the folder."""
        folder = self.folder
        if folder is None or not _writable(folder):
            return
        try:
            atomic_write(folder / f"{key}{SUFFIX}", encode(key, database, warnings))
            _prune(folder)
        except OSError as exc:
            log.debug("DBC cache: cannot write to %s (%s)", folder, exc)


def cache_key(digest: bytes, formats: Sequence[str]) -> str:
    """The entry's name: DBC content, formats, the cantools that parsed it, our format."""
    sha = hashlib.sha256(digest)
    sha.update(json.dumps([list(formats), cantools.__version__, FORMAT]).encode())
    return sha.hexdigest()


def encode(key: str, database: Database, warnings: Sequence[CachedWarning]) -> bytes:
    """The entry for `database` (JSON: our tables, no code)."""
    return json.dumps({
        "key": key, "format": FORMAT, "cantools": cantools.__version__,
        "messages": [_message_table(message) for message in database.messages],
        "warnings": [list(warning) for warning in warnings],
    }, separators=(",", ":")).encode()


def decode(data: bytes, key: str, files: int) -> tuple[Database, tuple[CachedWarning, ...]]:
    """The database and warnings of an entry of `files` DBC files; ValueError (or whatever a
    malformed table makes cantools raise) when it is not an entry for `key`."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("key") != key \
            or document.get("format") != FORMAT:
        raise ValueError("an entry for another key or format")
    if not document["messages"]:  # the loader refuses a DBC without messages: never cached
        raise ValueError("an entry without messages")
    # As Database.add_dbc_string leaves it: strict=False (overlaps are our warnings), the
    # signals already in the order the loader sorted them into, the messages added as it adds
    # them (Database(messages) would build every message's codec a second time: +20 ms).
    database = Database(strict=False, sort_signals=None)
    database._add_messages([_message(table) for table in document["messages"]])
    warnings = tuple((_int(index), _of(message, str), _int(frame_id),
                      tuple(_of(name, str) for name in _of(signals, list)), _int(length))
                     for index, message, frame_id, signals, length in document["warnings"])
    if any(not 0 <= warning[0] < files for warning in warnings):
        raise ValueError("a warning about a file the entry does not have")
    return database, warnings


def decoding_tables(database: Database) -> list[dict[str, Any]]:
    """What the cache keeps of `database`, as plain values: two databases with equal tables
    decode alike."""
    return [_message_table(message) for message in database.messages]


def _message_table(message: Message) -> dict[str, Any]:
    return {"frame_id": message.frame_id, "name": message.name, "length": message.length,
            "extended": message.is_extended_frame, "fd": message.is_fd,
            "unused": message.unused_bit_pattern,
            "signals": [_signal_table(signal) for signal in message.signals]}


def _signal_table(signal: Signal) -> dict[str, Any]:
    conversion = signal.conversion
    return {"name": signal.name, "start": signal.start, "length": signal.length,
            "byte_order": signal.byte_order, "signed": signal.is_signed,
            "float": conversion.is_float, "scale": conversion.scale,
            "offset": conversion.offset,
            # [raw value, name] pairs: JSON objects would make the raw values strings.
            "choices": None if conversion.choices is None else
            [[int(value), str(named)] for value, named in conversion.choices.items()],
            "initial": signal.raw_initial, "invalid": signal.raw_invalid,
            "minimum": signal.minimum, "maximum": signal.maximum, "unit": signal.unit,
            "multiplexer": signal.is_multiplexer, "mux_ids": signal.multiplexer_ids,
            "mux_signal": signal.multiplexer_signal}


def _message(table: dict[str, Any]) -> Message:
    return Message(frame_id=_int(table["frame_id"]), name=_of(table["name"], str),
                   length=_int(table["length"]),
                   signals=[_signal(signal) for signal in _of(table["signals"], list)],
                   is_extended_frame=_of(table["extended"], bool), is_fd=_of(table["fd"], bool),
                   unused_bit_pattern=_int(table["unused"]), strict=False, sort_signals=None)


def _signal(table: dict[str, Any]) -> Signal:
    choices = table["choices"]
    if choices is not None:
        choices = {_int(value): NamedSignalValue(_int(value), _of(name, str))
                   for value, name in _of(choices, list)}
    if table["byte_order"] not in ("little_endian", "big_endian"):
        raise ValueError(f"byte order {table['byte_order']!r}")
    mux_ids = table["mux_ids"]
    return Signal(name=_of(table["name"], str), start=_int(table["start"]),
                  length=_int(table["length"]), byte_order=table["byte_order"],
                  is_signed=_of(table["signed"], bool),
                  raw_initial=_number(table["initial"]), raw_invalid=_number(table["invalid"]),
                  conversion=BaseConversion.factory(scale=_number(table["scale"]),
                                                    offset=_number(table["offset"]),
                                                    choices=choices,
                                                    is_float=_of(table["float"], bool)),
                  minimum=_number(table["minimum"]), maximum=_number(table["maximum"]),
                  unit=None if table["unit"] is None else _of(table["unit"], str),
                  is_multiplexer=_of(table["multiplexer"], bool),
                  multiplexer_ids=None if mux_ids is None else
                  [_int(value) for value in _of(mux_ids, list)],
                  multiplexer_signal=None if table["mux_signal"] is None else
                  _of(table["mux_signal"], str))


# A damaged entry can hold anything JSON can; cantools' constructors take most of it without a
# word (a length "8" would fail only when a frame is decoded), so each value is checked here.

def _of(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{value!r} is not a {kind.__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _number(value: Any) -> int | float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{value!r} is not a number")
    return value


def _writable(folder: Path) -> bool:
    """Whether this process may write entries into `folder`: it owns it, or owns the state
    folder above it and makes it. Another user (root running `config check` on a vehicle)
    only reads: its entries would be files the agent cannot read or replace."""
    try:
        return folder.stat().st_uid == os.geteuid()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    try:
        if folder.parent.stat().st_uid != os.geteuid():
            return False
        folder.mkdir(mode=0o700)
    except FileExistsError:
        return True
    except OSError:
        return False
    return True


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob(f"*{SUFFIX}"), key=lambda path: path.stat().st_mtime_ns)
    for path in entries[:-KEPT]:
        path.unlink(missing_ok=True)
