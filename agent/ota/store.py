"""Applied config updates on disk, written so that a power cut never leaves half a config.

Layout in `[state] directory`/ota:

    current.cose   the signed update in force (absent: the local config file alone)
    previous.cose  the last-known-good before it (absent: the local config file alone)
    pending        the version of `current` while its health watch runs (absent: confirmed)
    highest        the highest version ever applied: anti-rollback across restarts
    dbc/           DBC files delivered inside updates, named by their SHA-256

Every file is replaced atomically: written to a temporary file, fsync'd, renamed over the old
one, and the folder fsync'd so that the rename itself is durable. `commit` writes in an order
where a crash at any point leaves `current` either the old or the new update, and `highest`
never below what `current` holds (the reader takes the larger of the two).

`highest` only rises while the agent runs; `reset_floor` (`edge-agent config reset-floor`, root
on the vehicle, agent stopped) is the one way down, for a trusted signer's mistake.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from agent.runtime.files import atomic_write, sync_folder

log = logging.getLogger(__name__)


def atomic_remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        sync_folder(path.parent)


class ConfigStore:
    def __init__(self, state_directory: Path) -> None:
        self.directory = state_directory / "ota"
        self.dbc_directory = self.directory / "dbc"
        self._current = self.directory / "current.cose"
        self._previous = self.directory / "previous.cose"
        self._pending = self.directory / "pending"
        self._highest = self.directory / "highest"
        self.dbc_directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):  # a crash mid-write left it
            leftover.unlink()

    def current(self) -> bytes | None:
        return _read(self._current)

    def previous(self) -> bytes | None:
        return _read(self._previous)

    def highest(self) -> int:
        text = _read(self._highest)
        try:
            return int(text) if text else 0
        except ValueError:
            log.error("%s is damaged (%r); treating it as 0", self._highest, text[:40])
            return 0

    def pending(self) -> int | None:
        text = _read(self._pending)
        return int(text) if text and text.isdigit() else None

    def save_dbc(self, name: str, content: bytes) -> Path:
        path = self.dbc_directory / name
        if not path.exists():
            atomic_write(path, content)
        return path

    def commit(self, envelope: bytes, version: int) -> None:
        """Make `envelope` current and the one in force before it the last-known-good."""
        atomic_write(self._pending, str(version).encode())
        current = self.current()
        if current is None:
            atomic_remove(self._previous)
        elif current != envelope:
            atomic_write(self._previous, current)
        atomic_write(self._current, envelope)
        atomic_write(self._highest, str(max(version, self.highest())).encode())

    def confirm(self) -> None:
        """The current update passed its health watch."""
        atomic_remove(self._pending)

    def roll_back(self) -> None:
        """Put the last-known-good back in force (the local file alone if there is none)."""
        previous = self.previous()
        if previous is None:
            atomic_remove(self._current)
        else:
            atomic_write(self._current, previous)
            atomic_remove(self._previous)
        atomic_remove(self._pending)

    def reset_floor(self, version: int) -> None:
        """Forget every applied update and make `version` the anti-rollback floor: the agent
        starts on its local file and takes the next update above `version`. Interrupted, it
        leaves a part of the updates forgotten and the old floor: run it again."""
        for path in (self._pending, self._current, self._previous):
            atomic_remove(path)
        atomic_write(self._highest, str(version).encode())
        if os.geteuid() == 0:
            # Run by root: the agent, its own user, must still read the floor it writes.
            owner = self.directory.stat()
            os.chown(self._highest, owner.st_uid, owner.st_gid)
        for path in self.dbc_directory.iterdir():  # every suffix a delivered database keeps
            path.unlink()

    def keep_only_dbc(self, names: set[str]) -> None:
        """Delete delivered databases (DBC, ARXML, KCD, SYM: the folder holds nothing else)
        that neither the current nor the previous update uses."""
        for path in self.dbc_directory.iterdir():
            if path.is_file() and path.name not in names:
                path.unlink()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
