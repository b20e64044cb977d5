"""Loading DBC files: one cantools database per source, with a digest that names its content."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cantools.database.can import Database

from agent.errors import DbcError


@dataclass(frozen=True)
class LoadedDbc:
    """The databases of one source merged into one, and the SHA-256 over their bytes."""

    database: Database
    digest: bytes
    paths: tuple[Path, ...]


# Parsed databases by content digest: buses that share a DBC (and a config reload that keeps
# it) share one cantools object instead of ~4 MB each. Nothing mutates a loaded database.
_PARSED: dict[bytes, Database] = {}
_PARSED_LIMIT = 8


def load_dbc(paths: Sequence[Path]) -> LoadedDbc:
    """Load and merge DBC files; errors name the file and what cantools disliked."""
    contents = []
    sha = hashlib.sha256()
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise DbcError(f"{path}: cannot read DBC file ({exc.strerror})") from exc
        sha.update(hashlib.sha256(content).digest())
        contents.append((path, content))
    digest = sha.digest()
    database = _PARSED.get(digest)
    if database is None:
        database = _parse(contents)
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[digest] = database
    return LoadedDbc(database=database, digest=digest, paths=tuple(paths))


def _parse(contents: Sequence[tuple[Path, bytes]]) -> Database:
    database = Database(strict=True)
    for path, content in contents:
        before = len(database.messages)
        try:
            database.add_dbc_string(content.decode("cp1252"))
        except Exception as exc:  # cantools raises many types for malformed files
            raise DbcError(f"{path}: cantools rejects this DBC: {exc}") from exc
        if len(database.messages) == before:
            raise DbcError(f"{path}: defines no CAN messages (BO_ lines); is it a DBC file?")
    return database


def combined_digest(digests: Sequence[bytes]) -> bytes:
    """One digest for every DBC the agent runs with, in source order."""
    sha = hashlib.sha256()
    for digest in digests:
        sha.update(digest)
    return sha.digest()
