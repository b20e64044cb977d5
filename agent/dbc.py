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


def load_dbc(paths: Sequence[Path]) -> LoadedDbc:
    """Load and merge DBC files; errors name the file and what cantools disliked."""
    database = Database(strict=True)
    sha = hashlib.sha256()
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise DbcError(f"{path}: cannot read DBC file ({exc.strerror})") from exc
        sha.update(hashlib.sha256(content).digest())
        before = len(database.messages)
        try:
            database.add_dbc_string(content.decode("cp1252"))
        except Exception as exc:  # cantools raises many types for malformed files
            raise DbcError(f"{path}: cantools rejects this DBC: {exc}") from exc
        if len(database.messages) == before:
            raise DbcError(f"{path}: defines no CAN messages (BO_ lines); is it a DBC file?")
    return LoadedDbc(database=database, digest=sha.digest(), paths=tuple(paths))


def combined_digest(digests: Sequence[bytes]) -> bytes:
    """One digest for every DBC the agent runs with, in source order."""
    sha = hashlib.sha256()
    for digest in digests:
        sha.update(digest)
    return sha.digest()
