"""Parsed DBCs on disk, by content digest: a restart (and every CLI check) skips cantools' parser.

cantools' DBC parser takes ~0.2 s for the bundled 931-signal file, the largest part of the
agent's start-up. What the agent reads from a parsed database is small: per message its frame
ID, name, length, frame type and signals; per signal its bit layout, conversion (scale,
offset, float, choices), limits, unit and multiplexing. Those are kept here as JSON, our own
tables (agent/decoding/tables.py), read back without importing cantools: `config check` and
`diag selftest` plan from them directly, and the daemon builds cantools' `Message` and
`Signal` objects from them (agent/decoding/database.py). JSON, not pickle: an entry someone
tampered with can give wrong tables at worst, never run code (and the folder is the state
folder's, private to the agent's user).

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
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.decoding.tables import (
    DbcTables,
    as_int,
    as_type,
    from_plain,
    tables_of,
    to_plain,
)
from agent.runtime.files import atomic_write

if TYPE_CHECKING:
    from cantools.database.can import Database

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

    def get(self, key: str, files: int) -> tuple[DbcTables, tuple[CachedWarning, ...]] | None:
        """The tables and warnings of `files` DBC files cached under `key`, or None (missing
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
        except Exception as exc:  # anything a damaged entry makes the decoding raise
            log.debug("DBC cache: ignoring %s (%s): parsing instead", path, exc)
            return None

    def put(self, key: str, tables: DbcTables, warnings: Sequence[CachedWarning]) -> None:
        """Keep `tables` under `key`, if this process owns (or may make) the folder."""
        folder = self.folder
        if folder is None or not _writable(folder):
            return
        try:
            atomic_write(folder / f"{key}{SUFFIX}", encode(key, tables, warnings))
            _prune(folder)
        except OSError as exc:
            log.debug("DBC cache: cannot write to %s (%s)", folder, exc)


def cache_key(digest: bytes, formats: Sequence[str]) -> str:
    """The entry's name: DBC content, formats, the cantools that parsed it, our format."""
    sha = hashlib.sha256(digest)
    sha.update(json.dumps([list(formats), cantools_version(), FORMAT]).encode())
    return sha.hexdigest()


@cache
def cantools_version() -> str:
    """`cantools.__version__` without importing cantools, which imports python-can (~0.15 s
    of a `config check` that needs neither): the Version of its installed metadata, which
    cantools reads itself (importlib.metadata, another ~50 ms to import), found next to it."""
    spec = importlib.util.find_spec("cantools")
    if spec is not None and spec.origin is not None:
        for info in sorted(Path(spec.origin).parent.parent.glob("cantools-*.dist-info")):
            fields = _metadata_fields(info / "METADATA")
            if fields.get("Name", "").lower() == "cantools" and "Version" in fields:
                return fields["Version"]
    from importlib.metadata import version  # installed some other way (an egg, a zip)

    return version("cantools")


def _metadata_fields(path: Path) -> dict[str, str]:
    """The header fields of a METADATA file (RFC 822 style, before the first blank line)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line:
            break
        name, _, value = line.partition(": ")
        fields.setdefault(name, value.strip())
    return fields


def encode(key: str, tables: DbcTables, warnings: Sequence[CachedWarning]) -> bytes:
    """The entry for `tables` (JSON: our tables, no code)."""
    return json.dumps({
        "key": key, "format": FORMAT, "cantools": cantools_version(),
        "messages": to_plain(tables),
        "warnings": [list(warning) for warning in warnings],
    }, separators=(",", ":")).encode()


def decode(data: bytes, key: str, files: int) -> tuple[DbcTables, tuple[CachedWarning, ...]]:
    """The tables and warnings of an entry of `files` DBC files; ValueError (or whatever else
    a malformed table makes the decoding raise) when it is not an entry for `key`."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("key") != key \
            or document.get("format") != FORMAT:
        raise ValueError("an entry for another key or format")
    if not document["messages"]:  # the loader refuses a DBC without messages: never cached
        raise ValueError("an entry without messages")
    tables = from_plain(document["messages"])
    warnings = tuple((as_int(index), as_type(message, str), as_int(frame_id),
                      tuple(as_type(name, str) for name in as_type(signals, list)),
                      as_int(length))
                     for index, message, frame_id, signals, length in document["warnings"])
    if any(not 0 <= warning[0] < files for warning in warnings):
        raise ValueError("a warning about a file the entry does not have")
    return tables, warnings


def decoding_tables(database: Database) -> list[dict[str, Any]]:
    """What the cache keeps of a cantools database, as plain values: two databases with equal
    tables decode alike."""
    return to_plain(tables_of(database))


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
