"""`tools/backend ingest FILE...`: saved batches into the Parquet data set, offline.

What it reads (each FILE, or every file under a folder, recursively, hidden files skipped):

- a vehicle's spool (`spool.sqlite`, recognised by the SQLite header): every batch and event
  still waiting in it, read only (nothing in the file or beside it changes). Rows sealed at
  rest (agent/privacy/at_rest.py) are opened with the vehicle's at-rest keys
  (`spool-<level>.key`), looked for in `--at-rest-keys DIR`, by default the spool's own
  folder (the vehicle's state folder); a row whose key is not there is rejected, counted, and
  the message names the key file it needs.
- any other file: one saved envelope, the COSE_Sign1 message exactly as it travelled on MQTT
  (a batch, an event, or a signed dictionary such as the `{did}.cose` files of a
  `--dictionary-cache`), told apart by its content type.

Everything goes through the live worker's Backend: the same keys (`--keys`), signature and
vehicle checks, dictionaries from batches that carry one, from dictionary files, or from
`--dictionary-cache`. Batches whose dictionary turns up later in the input wait for it; those
whose dictionary never comes are counted undecodable with the reason.

Exactly once: before it writes, ingest reads the (vehicle, boot, seq) of every batch and event
the data set already holds (written live by workers, or by an earlier ingest) and skips them
as duplicates, so ingesting the same spool twice, or a spool whose batches also arrived live,
stores each batch once. (Workers writing the same data set at the same time as an ingest are
not seen; run ingest when the data it brings is not also arriving live.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.config.schema import CONSENT_LEVELS
from agent.errors import AgentError
from agent.events.codec import EVENT_CONTENT_TYPE
from agent.privacy.at_rest import FORMAT, KEY_BYTES, NONCE_BYTES, associated_data, key_path
from agent.wire.cose import HEADER_CONTENT_TYPE
from agent.wire.dictionary import DICTIONARY_CONTENT_TYPE
from fleet.backend import Backend, load_keyring

log = logging.getLogger("fleet.ingest")

SQLITE_MAGIC = b"SQLite format 3\x00"


class IngestError(AgentError):
    """A file that cannot be ingested as a whole (unreadable, not a spool)."""


@dataclass(frozen=True)
class Saved:
    """One envelope found in the input, and where (for messages about it)."""

    origin: str
    envelope: bytes
    topic: str = ""  # the spool row's leaf (`telemetry`, `events`); "" for a file


@dataclass
class Rejects:
    """What could not be used, each with its reason (a few kept for the report)."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.reasons) < 50:
            self.reasons.append(reason)
        log.warning("%s", reason)


class AtRestKeys:
    """The vehicle's spool keys, read (never created) from a folder, one per consent level."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._ciphers: dict[int, ChaCha20Poly1305 | None] = {}

    def open(self, rank: int, sealed: bytes, topic: str, boot: bytes, seq: int) -> bytes:
        """The envelope in a sealed row; IngestError saying which key is needed."""
        if not 0 <= rank < len(CONSENT_LEVELS):
            raise IngestError(f"sealed under consent rank {rank}, which this version does "
                              "not know")
        path = key_path(self.directory, rank)
        if rank not in self._ciphers:
            try:
                key = path.read_bytes()
            except OSError:
                key = b""
            self._ciphers[rank] = ChaCha20Poly1305(key) if len(key) == KEY_BYTES else None
        cipher = self._ciphers[rank]
        if cipher is None:
            raise IngestError(f"sealed at rest under the {CONSENT_LEVELS[rank]!r} key, and "
                              f"{path} is missing or not a key: pass --at-rest-keys DIR, the "
                              f"vehicle's state folder holding {path.name} (a key destroyed "
                              "by a consent downgrade or `privacy erase` opens nothing)")
        if sealed[:1] != FORMAT:
            raise IngestError(f"unknown at-rest format {sealed[:1].hex()!r}")
        nonce, ciphertext = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, ciphertext, associated_data(rank, topic, boot, seq))
        except InvalidTag:
            raise IngestError(f"does not open with {path} (the key was made anew, or the row "
                              "was altered)") from None


def input_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Each path, or the files under it (sorted, hidden ones such as temp files skipped)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file()
                              and not any(part.startswith(".")
                                          for part in p.relative_to(path).parts))
        else:
            yield path


def spool_rows(path: Path, keys: AtRestKeys, rejects: Rejects) -> list[Saved]:
    """The envelopes waiting in a spool file, events first as the agent sends them; sealed
    rows opened with `keys` (rows that do not open are rejected and counted)."""
    errors = []
    for options in ("mode=ro", "immutable=1"):  # as agent/output/spool_file.py reads it
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?{options}", uri=True)) as db:
                columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
                if not columns:
                    raise IngestError(f"{path}: an SQLite file without a `batches` table, "
                                      "not a vehicle's spool")
                consent = "consent" if "consent" in columns else "2"
                sealed = "sealed" if "sealed" in columns else "0"
                rows = db.execute(f"SELECT id, topic, boot, seq, envelope, {consent}, {sealed} "
                                  "FROM batches ORDER BY priority, id").fetchall()
            break
        except sqlite3.Error as exc:
            errors.append(str(exc))
    else:
        raise IngestError(f"{path}: cannot read the spool ({'; '.join(errors)})")
    saved = []
    for row_id, topic, boot, seq, envelope, rank, is_sealed in rows:
        origin = f"{path} row {row_id} ({topic} seq {seq})"
        if is_sealed:
            try:
                envelope = keys.open(rank, envelope, topic, bytes(boot), seq)
            except IngestError as exc:
                rejects.add(f"{origin}: {exc}")
                continue
        saved.append(Saved(origin, bytes(envelope), topic))
    return saved


def read_input(path: Path, at_rest_keys: Path | None, rejects: Rejects) -> list[Saved]:
    """The envelopes in one input file; IngestError when it cannot be read at all."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if head == SQLITE_MAGIC:
        return spool_rows(path, AtRestKeys(at_rest_keys or path.parent), rejects)
    try:
        return [Saved(str(path), path.read_bytes())]
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def content_type(envelope: bytes) -> str:
    """The content type in the envelope's protected header, unverified ("" when it has none
    or is no COSE message: the Backend's check then says what is wrong)."""
    try:
        tagged = cbor2.loads(envelope)
        headers = cbor2.loads(tagged.value[0])
        found = headers.get(HEADER_CONTENT_TYPE, "")
    except Exception:  # any malformed input: verification reports it
        return ""
    return found if isinstance(found, str) else ""


def stored_keys(root: Path, table: str) -> list[tuple[str, bytes, int]]:
    """(vehicle, boot, seq) of every batch (`batches`) or event (`events`) in the data set."""
    if not any((root / table).rglob("*.parquet")):
        return []
    try:
        import duckdb
    except ImportError as exc:
        raise IngestError(f"ingest needs duckdb ({exc}): install edge-agent-fleet[parquet]"
                          ) from exc

    from fleet.query import parquet_source

    connection = duckdb.connect()
    try:
        rows = connection.execute(
            f"SELECT DISTINCT vehicle, boot, seq FROM {parquet_source(root, table)}").fetchall()
    except duckdb.Error as exc:
        raise IngestError(f"{root}: cannot read the data set's {table} ({exc})") from exc
    finally:
        connection.close()
    return [(vehicle, bytes.fromhex(boot), seq) for vehicle, boot, seq in rows]


class Ingest:
    """Feeds envelopes to a Backend and its decoded batches and events to a DatasetWriter."""

    def __init__(self, backend: Backend, dataset: Any) -> None:
        self.backend = backend
        self.dataset = dataset
        self.dictionaries = 0
        self.event_rejects = 0
        self.rejects = Rejects()

    def already_stored(self, root: Path) -> int:
        """Mark what the data set holds as seen, so that it counts as a duplicate here."""
        known = 0
        for table, tracker in (("batches", self.backend.tracker),
                               ("events", self.backend.event_tracker)):
            for vehicle, boot, seq in stored_keys(root, table):
                tracker.seen.setdefault((vehicle, boot), set()).add(seq)
                known += 1
        return known

    def feed(self, saved: Saved) -> None:
        kind = content_type(saved.envelope)
        backend = self.backend
        if kind == DICTIONARY_CONTENT_TYPE:
            rejected = backend.dictionaries_rejected
            self._decode(backend.receive_dictionary(saved.envelope))
            if backend.dictionaries_rejected > rejected:
                self.rejects.add(f"{saved.origin}: not a valid signed dictionary")
            else:
                self.dictionaries += 1
            return
        if kind == EVENT_CONTENT_TYPE or saved.topic == "events":
            receipt = backend.receive_event(saved.envelope)
            if not receipt.ok:
                self.rejects.add(f"{saved.origin}: {receipt.error}")
            elif receipt.event is not None and not receipt.duplicate:
                self.dataset.add_event(receipt.event)
            return
        receipt = backend.receive(saved.envelope)
        if not receipt.ok or receipt.body is None:
            self.rejects.add(f"{saved.origin}: {receipt.error}")
            return
        if receipt.duplicate:
            return
        self.dataset.add_received(receipt.body)
        # Offline, nothing waits in time: a batch is held until its dictionary shows up in
        # the input, or given up at the end (`finish`).
        self._decode(backend.admit(receipt.body, 0.0))

    def _decode(self, bodies: list) -> None:
        for body in bodies:
            dictionary = self.backend.dictionaries.lookup(body.dictionary_id)
            assert dictionary is not None  # admit() and receive_dictionary() checked it
            self.backend.decoded += 1
            self.dataset.add_samples(body, dictionary)

    def finish(self) -> dict[str, Any]:
        self.backend.finish()
        self.dataset.flush()
        report = self.backend.report()
        return {
            "batches": report["verified"], "stored": report["decoded"],
            "duplicates": report["duplicates"], "undecodable": report["undecodable"],
            "undecodable_batches": report["undecodable_batches"],
            "samples": self.dataset.written_rows, "events": report["events"],
            "event_duplicates": report["event_duplicates"], "dictionaries": self.dictionaries,
            "rejected": self.rejects.count, "reject_reasons": self.rejects.reasons,
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/backend ingest",
        description="Verify, decode and store saved batches (a vehicle's spool.sqlite, or "
                    "saved COSE envelopes: batches, events, signed dictionaries) in the "
                    "Parquet data set, each batch once.")
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE",
                        help="spool.sqlite, an envelope file, or a folder of them")
    parser.add_argument("--dataset", type=Path, required=True, metavar="DIR",
                        help="the Parquet data set (the workers' --dataset)")
    parser.add_argument("--keys", action="append", required=True, metavar="[VEHICLE=]PATH",
                        help="vehicle public keys, as for the live backend (repeatable)")
    parser.add_argument("--dictionary-cache", type=Path, metavar="DIR",
                        help="the workers' dictionary cache: dictionaries are read from it "
                             "and the ones found in the input added to it")
    parser.add_argument("--at-rest-keys", type=Path, metavar="DIR",
                        help="the vehicle's state folder holding spool-<level>.key, to open a "
                             "spool sealed at rest (default: the spool's own folder)")
    parser.add_argument("--worker", default="ingest", metavar="NAME",
                        help="the name in the data set's file names (default: ingest)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s backend ingest: %(message)s")
    try:
        summary = run(args)
    except AgentError as exc:
        print(f"backend ingest: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['files']} files: {summary['stored']} batches stored "
              f"({summary['samples']} samples), {summary['events']} events, "
              f"{summary['duplicates']} duplicates skipped, {summary['undecodable']} "
              f"undecodable, {summary['rejected']} rejected, {summary['unreadable_files']} "
              "unreadable files")
    return 1 if summary["rejected"] or summary["unreadable_files"] else 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from fleet.dataset import DatasetWriter
    except ImportError as exc:
        raise AgentError(f"ingest needs pyarrow ({exc}): install "
                         "edge-agent-fleet[parquet]") from exc
    try:
        dataset = DatasetWriter(args.dataset, args.worker)
    except ValueError as exc:
        raise AgentError(f"--worker: {exc}") from exc
    # Files are ingested in the order given; a batch before its dictionary waits for it.
    backend = Backend(*load_keyring(args.keys), dictionary_cache=args.dictionary_cache,
                      hold=float("inf"))
    ingest = Ingest(backend, dataset)
    known = ingest.already_stored(args.dataset)
    files = list(input_files(args.files))
    unreadable: list[str] = []
    with _progress(len(files)) as progress:
        for path in files:
            try:
                saved = read_input(path, args.at_rest_keys, ingest.rejects)
            except IngestError as exc:
                unreadable.append(str(exc))
                log.error("%s", exc)
                progress(path.name, 1, 0)
                continue
            progress(path.name, 0 if saved else 1, max(len(saved) - 1, 0))
            for item in saved:
                ingest.feed(item)
                progress(path.name, 1, 0)
    return {"files": len(files), "unreadable_files": len(unreadable),
            "unreadable": unreadable, "already_stored": known, **ingest.finish()}


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal (rich), else nothing. Its unit is the
    envelope; it starts at one per file and grows as a file turns out to hold more (a spool):
    the callable takes the file's name, envelopes done, and envelopes found beyond one."""
    if not sys.stderr.isatty():
        yield lambda name, done, more: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True),
                  transient=True) as progress:
        task = progress.add_task("", total=total)
        grown = [total]

        def update(name: str, done: int, more: int) -> None:
            grown[0] += more
            progress.update(task, advance=done, total=grown[0], description=name)

        yield update
