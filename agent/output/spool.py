"""The spool: sealed batches on disk until the broker acknowledges them.

SQLite in WAL mode with `synchronous=FULL`: a batch is committed (fsync'd) before the uplink
may offer it and deleted only at its PUBACK, so a power cut loses nothing that was sealed.
Rows are served by (priority, arrival): events before bulk telemetry, each in order.
The spool is bounded in bytes, on disk: when a new batch does not fit, the oldest bulk batches
are evicted and counted. A batch fits when the envelopes stay within `max_bytes` and the
database's pages in use within `max_bytes` + DATABASE_ALLOWANCE (a page holds one batch of
just over half a page, and a small batch carries a row's overhead), so the database file,
which reuses freed pages and never grows past its pages in use, keeps to that too. The WAL
is checkpointed whenever it holds `wal_limit` (a quarter of the bound, at most half the
reserve) and cut back to that; with nothing left to send it is cut to nothing. A database
that fails its integrity check at start is moved aside (kept for support) and a fresh one
begun.

At rest (agent/privacy/at_rest.py): every row is stored sealed with the key of the consent level it
was sealed under, with the rank, topic, boot and sequence number as associated data, so that
destroying a key (a consent downgrade, `edge-agent privacy erase`) makes what it sealed
unreadable wherever a copy survives; such a row is dropped and counted (`unreadable`) when it
is next read. `secure_delete` zeroes what SQLite frees; the database and its WAL are 0600 in
a 0700 folder. Plaintext rows of an older version are sealed in place at the first start
(and the file vacuumed, so their freed pages are rewritten), then sent as usual.

A full disk is survived: what cannot be written is counted and handed to the uplink in memory
only. In WAL mode even a DELETE needs free space (the WAL must be checkpointed into the main
file), so a disk filled by something else could wedge the spool for good; a reserve file
beside the database is given up the moment a deletion fails, which lets the backlog drain and
the WAL shrink, and is taken again once there is room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The file's name and lanes belong to its layout (spool_file.py); re-exported here.
from agent.output.spool_file import PRIORITY_EVENT as PRIORITY_EVENT
from agent.output.spool_file import PRIORITY_TELEMETRY as PRIORITY_TELEMETRY
from agent.output.spool_file import SPOOL_FILE as SPOOL_FILE
from agent.privacy.at_rest import SEAL_OVERHEAD, AtRest, Unreadable, associated_data
from agent.runtime.files import private_file, private_folder

log = logging.getLogger(__name__)

# The consent rank a batch was sealed under (agent/privacy/consent.py: 0 off .. 2 full); a consent
# downgrade drops what was sealed under a higher one (`drop_above`).
CONSENT_FULL = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    boot BLOB NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    envelope BLOB NOT NULL,
    consent INTEGER NOT NULL DEFAULT 2,
    sealed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_order ON batches (priority, id);
"""


@dataclass(frozen=True)
class SpooledBatch:
    """A batch as the uplink sees it: `id` is None when it could not be written to disk."""

    id: int | None
    priority: int
    topic: str
    seq: int
    envelope: bytes


@dataclass(frozen=True)
class SpoolStats:
    depth: int
    bytes: int
    oldest_created: float | None
    evicted: int
    not_kept: int
    moved_aside: int
    unreadable: int = 0


# What the bound counts per row: the envelope as sealed by the agent, not the 29 bytes that
# sealing at rest adds (so a bound set in envelopes holds as many as before; the pages check
# below counts what is on disk).
ENVELOPE_BYTES = f"(LENGTH(envelope) - sealed * {SEAL_OVERHEAD})"
RESERVE_BYTES = 1 << 20
ROW_OVERHEAD = 64  # a row's other columns and record header, and its index entry, in bytes
DATABASE_ALLOWANCE = 64 * 1024  # the schema, the index and the tree's inner pages


class Spool:
    def __init__(self, path: Path, max_bytes: int, reserve_bytes: int = RESERVE_BYTES,
                 at_rest: AtRest | None = None) -> None:
        """`at_rest` seals every row: the agent passes the one whose keys it destroys on a
        downgrade; by default it is that of the spool's folder (the same keys)."""
        self.path = path
        self._at_rest = at_rest if at_rest is not None else AtRest(path.parent)
        self.unreadable = 0
        self.max_bytes = max_bytes
        self.evicted = 0
        self.not_kept = 0
        self.moved_aside = 0
        self._lock = threading.Lock()
        self._bytes = 0
        self._undeleted: set[int] = set()
        # Published, awaiting PUBACK: evicted last, since they are probably delivered already.
        self._in_flight: set[int] = set()
        # Evicted while in flight: lost only if no PUBACK comes (then counted in `evicted`).
        self._evicted_in_flight: set[int] = set()
        self._reserve = path.with_name(path.name + ".reserve")
        self._reserve_bytes = reserve_bytes
        # A quarter of the bound keeps a small spool small; half the reserve keeps what a
        # checkpoint must copy into the main file well inside the reserve (a full disk); two
        # pages at the least, or every commit would checkpoint.
        self.wal_limit = max(2 * 4096, min(max_bytes // 4, reserve_bytes // 2))
        private_folder(path.parent)
        self._db = self._open()
        self._take_reserve()

    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {verdict}")
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("spool %s is damaged (%s): moved aside to %s, starting a fresh spool; "
                      "batches in it were not sent", self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    source.rename(aside.with_name(aside.name + suffix))
            self.moved_aside += 1
            db = self._connect()
        self._bytes = db.execute(f"SELECT COALESCE(SUM({ENVELOPE_BYTES}), 0) FROM batches"
                                 ).fetchone()[0]
        return db

    def _connect(self) -> sqlite3.Connection:
        # 0600 before SQLite opens it: SQLite gives its -wal and -shm the database's mode.
        for suffix in ("-wal", "-shm"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                private_file(extra)
        db = sqlite3.connect(private_file(self.path), isolation_level=None,
                             check_same_thread=False)
        # Freed pages (delivered, evicted and dropped batches) are zeroed, not left in the file.
        db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        # A checkpoint once the WAL holds `wal_limit` (a frame is a page and a 24-byte header),
        # after which the next write starts the WAL over and cuts the file back to `wal_limit`:
        # the WAL is reused, not regrown (an fsync of a file that grows costs a journal commit
        # of its own: twice the time of a put).
        frames = max(1, self.wal_limit // (self._page_size + 24))
        db.execute(f"PRAGMA wal_autocheckpoint={frames}")
        db.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
        if "consent" not in columns:  # a spool from before consent levels
            db.execute(f"ALTER TABLE batches ADD COLUMN consent INTEGER NOT NULL "
                       f"DEFAULT {CONSENT_FULL}")
        if "sealed" not in columns:  # a spool from before sealing at rest: all plaintext
            db.execute("ALTER TABLE batches ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0")
        self._seal_plaintext_rows(db, vacuum="sealed" not in columns)
        return db

    def _seal_plaintext_rows(self, db: sqlite3.Connection, *, vacuum: bool) -> None:
        """Seal in place the rows an older version spooled in plaintext (they are then sent
        as usual); after an upgrade, vacuum too, so that pages it freed before secure_delete
        was on are rewritten."""
        rows = db.execute("SELECT id, topic, boot, seq, consent, envelope FROM batches "
                          "WHERE sealed = 0").fetchall()
        if rows:
            db.execute("BEGIN IMMEDIATE")
            for batch_id, topic, boot, seq, consent, envelope in rows:
                stored = self._at_rest.seal(consent, envelope,
                                            associated_data(consent, topic, boot, seq))
                db.execute("UPDATE batches SET envelope = ?, sealed = 1 WHERE id = ?",
                           (stored, batch_id))
            db.execute("COMMIT")
            log.info("spool: sealed %d batches an older version kept in plaintext", len(rows))
        if vacuum:
            try:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a full disk: sealed rows are what counts
                log.warning("spool: cannot vacuum after sealing (%s)", exc)

    def put(self, topic: str, boot: bytes, seq: int, envelope: bytes,
            priority: int = PRIORITY_TELEMETRY, consent: int = CONSENT_FULL) -> SpooledBatch:
        """Commit a batch; evict old bulk batches to stay in bound; survive a full disk."""
        stored = self._at_rest.seal(consent, envelope,
                                    associated_data(consent, topic, boot, seq))
        size = len(envelope)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                evicted = self._make_room(size, len(stored))
                cursor = self._db.execute(
                    "INSERT INTO batches (priority, topic, boot, seq, created, envelope, "
                    "consent, sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (priority, topic, boot, seq, time.time(), stored, consent, 1))
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                self.not_kept += 1
                log.error("spool: cannot keep batch %d on disk (%s); sending it from memory "
                          "only", seq, exc)
                return SpooledBatch(None, priority, topic, seq, envelope)
            self._bytes += size
            self._count_evicted(evicted)
            if not self._reserve.exists():
                self._take_reserve()
            return SpooledBatch(cursor.lastrowid, priority, topic, seq, envelope)

    def _make_room(self, size: int, stored: int) -> list[int]:
        """Delete the oldest bulk batches until an envelope of `size` bytes, `stored` bytes
        on disk, fits; their ids. Counted by the caller once the transaction commits (a
        rollback brings them back)."""
        evicted: list[int] = []
        while self._bytes + size > self.max_bytes or self._pages_over(stored):
            # Acknowledged ones still here (the disk was full) go first: they were delivered.
            row = self._oldest(among=self._undeleted) \
                or self._oldest(skip=self._in_flight | self._undeleted, bulk=True) \
                or self._oldest(skip=self._undeleted, bulk=True)
            if row is None:
                return evicted
            self._db.execute("DELETE FROM batches WHERE id = ?", (row[0],))
            self._bytes -= row[1]
            evicted.append(row[0])
        return evicted

    def _pages_over(self, size: int) -> bool:
        """Would a batch of `size` bytes take the database's pages in use past the bound (plus
        DATABASE_ALLOWANCE for the schema and the index)? Pages, not envelope bytes: a small
        batch takes a row's overhead too, and a page holds one batch of just over half a page."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        page = self._page_size
        needed = -(-(size + ROW_OVERHEAD) // (page - 4))  # rounded up, as overflow pages
        return (pages - free + needed) * page > self.max_bytes + DATABASE_ALLOWANCE

    def _count_evicted(self, ids: list[int]) -> None:
        for batch_id in ids:
            if batch_id in self._undeleted:
                self._undeleted.discard(batch_id)  # delivered: nothing lost
            elif batch_id in self._in_flight:
                self._in_flight.discard(batch_id)
                self._evicted_in_flight.add(batch_id)
            else:
                self.evicted += 1

    def _oldest(self, *, skip: Collection[int] = (), among: Collection[int] | None = None,
                bulk: bool = False) -> tuple[int, int] | None:
        if among is not None and not among:
            return None
        conditions, parameters = [], []
        if bulk:
            conditions.append("priority = ?")
            parameters.append(PRIORITY_TELEMETRY)
        for ids, operator in ((skip, "NOT IN"), (among, "IN")):
            if ids:
                conditions.append(f"id {operator} ({','.join('?' * len(ids))})")
                parameters.extend(ids)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._db.execute(f"SELECT id, {ENVELOPE_BYTES} FROM batches {where} "
                                "ORDER BY id LIMIT 1", parameters).fetchone()

    def sending(self, batch_id: int) -> bool:
        """Claim `batch_id` for publishing: it is evicted after the others while its PUBACK is
        due. False when it was evicted since it was read (then it is not to be sent)."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM batches WHERE id = ?",
                                (batch_id,)).fetchone() is None:
                return False
            self._in_flight.add(batch_id)
            return True

    def not_sending(self, batch_ids: Iterable[int]) -> None:
        """These batches are no longer in flight (not published after all, or the uplink
        stopped before their PUBACK); those evicted meanwhile are lost now and counted."""
        with self._lock:
            ids = set(batch_ids)
            self._in_flight -= ids
            lost = ids & self._evicted_in_flight
            self._evicted_in_flight -= lost
            self.evicted += len(lost)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction was open
            self._db.execute("ROLLBACK")
        self._bytes = self._db.execute(
            f"SELECT COALESCE(SUM({ENVELOPE_BYTES}), 0) FROM batches").fetchone()[0]

    def next_batches(self, limit: int, skip: Sequence[int] = (), *, after: int | None = None,
                     up_to: int | None = None, newest: bool = False) -> list[SpooledBatch]:
        """Up to `limit` batches in (priority, arrival) order (`newest`: the reverse),
        leaving out the ids in `skip` and, if given, ids not in (`after`, `up_to`]."""
        conditions, parameters = [], []
        skip = [*skip, *self._undeleted]
        if skip:
            conditions.append(f"id NOT IN ({','.join('?' * len(skip))})")
            parameters.extend(skip)
        if after is not None:
            conditions.append("id > ?")
            parameters.append(after)
        if up_to is not None:
            conditions.append("id <= ?")
            parameters.append(up_to)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "id DESC" if newest else "priority, id"
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, priority, topic, seq, envelope, boot, consent, sealed FROM batches "
                f"{where} ORDER BY {order} LIMIT ?", (*parameters, limit)).fetchall()
            batches = []
            unreadable = []
            for batch_id, priority, topic, seq, stored, boot, consent, sealed in rows:
                try:
                    envelope = self._unseal(stored, topic, boot, seq, consent, sealed)
                except Unreadable as exc:
                    log.warning("spool: batch %d (%s, seq %d) cannot be opened (%s): dropped",
                                batch_id, topic, seq, exc)
                    unreadable.append(batch_id)
                    continue
                batches.append(SpooledBatch(batch_id, priority, topic, seq, envelope))
            if unreadable:
                self._drop_unreadable(unreadable)
        return batches

    def _unseal(self, stored: bytes, topic: str, boot: bytes, seq: int, consent: int,
                sealed: int) -> bytes:
        if not sealed:  # written by an older version while this one runs: never; kept safe
            return stored
        return self._at_rest.open(consent, stored, associated_data(consent, topic, boot, seq))

    def _drop_unreadable(self, ids: list[int]) -> None:
        """Rows whose key was destroyed were to be dropped anyway; counted apart from
        evictions. If the disk is full they stay, unreadable, until the next read."""
        marks = ",".join("?" * len(ids))
        try:
            self._delete_rows(ids, marks)
        except sqlite3.OperationalError as exc:
            self._rollback()
            log.warning("spool: cannot drop %d unreadable batches yet (%s)", len(ids), exc)
            return
        self.unreadable += len(ids)

    def delete(self, batch_id: int) -> None:
        """Forget an acknowledged batch (kept aside in memory while the disk is full)."""
        with self._lock:
            self._in_flight.discard(batch_id)
            if batch_id in self._evicted_in_flight:  # delivered after all: nothing to delete
                self._evicted_in_flight.discard(batch_id)
                return
            self._undeleted.add(batch_id)
            self._delete_acknowledged()

    def _delete_acknowledged(self) -> None:
        ids = sorted(self._undeleted)
        marks = ",".join("?" * len(ids))
        try:
            self._delete_rows(ids, marks)
        except sqlite3.OperationalError as exc:
            self._rollback()
            if not self._give_up_reserve(exc):
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._delete_rows(ids, marks)
            except sqlite3.OperationalError as again:
                self._rollback()
                log.warning("spool: cannot delete %d acknowledged batches yet (%s)", len(ids),
                            again)
                return
        self._undeleted.clear()
        self._truncate_wal_if_empty()

    def _delete_rows(self, ids: list[int], marks: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        freed = self._db.execute(f"SELECT COALESCE(SUM({ENVELOPE_BYTES}), 0) FROM batches "
                                 f"WHERE id IN ({marks})", ids).fetchone()[0]
        self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", ids)
        self._db.execute("COMMIT")
        self._bytes -= freed

    def _take_reserve(self) -> None:
        try:
            usage = os.statvfs(self.path.parent)
            if usage.f_bavail * usage.f_frsize < 2 * self._reserve_bytes:
                return
            with private_file(self._reserve).open("wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, self._reserve_bytes)
        except OSError:
            self._reserve.unlink(missing_ok=True)

    def _give_up_reserve(self, reason: Exception) -> bool:
        if not self._reserve.exists():
            return False
        log.warning("spool: disk full (%s): releasing the %d-byte reserve to drain the backlog",
                    reason, self._reserve_bytes)
        self._reserve.unlink(missing_ok=True)
        return True

    def drop_above(self, consent: int) -> int:
        """Delete every batch sealed under a consent rank above `consent`; how many went."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                freed, count = self._db.execute(
                    f"SELECT COALESCE(SUM({ENVELOPE_BYTES}), 0), COUNT(*) FROM batches "
                    "WHERE consent > ?", (consent,)).fetchone()
                self._db.execute("DELETE FROM batches WHERE consent > ?", (consent,))
                self._db.execute("COMMIT")
            except sqlite3.OperationalError:
                self._rollback()
                raise
            self._bytes -= freed
            self._truncate_wal_if_empty()
            return count

    def _truncate_wal_if_empty(self) -> None:
        """With nothing left to send (the link is up: after most acknowledgements), copy the
        WAL into the database and remove it, so that a spool at rest is its database alone.
        Not on every write: a WAL cut to nothing must grow again, and an fsync of a file that
        grows costs a journal commit of its own."""
        if self._bytes:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:  # a full disk: the next empty spool tries again
            log.debug("spool: cannot checkpoint the WAL yet (%s)", exc)

    def stats(self) -> SpoolStats:
        with self._lock:
            depth, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created) FROM batches").fetchone()
        return SpoolStats(depth=depth, bytes=self._bytes, oldest_created=oldest,
                          evicted=self.evicted, not_kept=self.not_kept,
                          moved_aside=self.moved_aside, unreadable=self.unreadable)

    def close(self) -> None:
        with self._lock:
            self._db.close()
