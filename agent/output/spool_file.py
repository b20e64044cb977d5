"""The spool file read by a process that does not hold it open: `edge-agent diag queue` and
`diag bundle` with the agent stopped. Read only, and without the at-rest keys: it counts rows
and their bytes on disk, never opens one, so it needs no cryptography (the diag commands stay
light, docs/performance.md).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

SPOOL_FILE = "spool.sqlite"  # in the [state] folder
PRIORITY_EVENT = 0
PRIORITY_TELEMETRY = 1


@dataclass(frozen=True)
class SpoolLane:
    """The batches of one priority sealed under one consent rank, as the file holds them."""

    priority: int
    consent: int
    batches: int
    bytes: int  # on disk: a row sealed at rest holds its envelope and the sealing's overhead
    oldest_created: float


@dataclass(frozen=True)
class SpoolFile:
    """A spool file read while no agent has it open (`edge-agent diag queue`, agent down)."""

    path: Path
    lanes: tuple[SpoolLane, ...]

    @property
    def depth(self) -> int:
        return sum(lane.batches for lane in self.lanes)

    @property
    def bytes(self) -> int:
        return sum(lane.bytes for lane in self.lanes)

    @property
    def oldest_created(self) -> float | None:
        return min((lane.oldest_created for lane in self.lanes), default=None)


def read_spool_file(path: Path) -> SpoolFile:
    """What waits in the spool at `path`, read only: nothing in it or beside it is changed
    (no journal is replayed or checkpointed). OSError when it cannot be read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no spool file (nothing was ever spooled here?)")
    query = ("SELECT priority, consent, COUNT(*), SUM(LENGTH(envelope)), MIN(created) "
             "FROM batches GROUP BY priority, consent ORDER BY priority, consent")
    errors = []
    # Read only; if SQLite cannot take its shared-memory file for that (a folder this user may
    # not write), read the file as it is on disk (`immutable`).
    for options in ("mode=ro", "immutable=1"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?{options}", uri=True)) as db:
                rows = db.execute(query).fetchall()
            return SpoolFile(path, tuple(SpoolLane(*row) for row in rows))
        except sqlite3.Error as exc:
            errors.append(str(exc))
    raise OSError(f"{path}: cannot read the spool ({'; '.join(errors)})")
