"""The backend side (`tools/backend`): receive, verify, de-duplicate and decode batches.

Subscribes with MQTT v5 shared subscriptions (`$share/GROUP/PREFIX/+/telemetry` and
`.../+/events`) so several instances split a fleet between them; verifies each COSE_Sign1
envelope against the vehicle public keys it is given; tracks (vehicle, boot, seq) to report
gaps and duplicates, for batches and events apart; decodes to physical values and prints a
summary line per batch and event, or writes one row per sample (and one per event) as JSON
Lines or CSV.

Workers are stateless: each also subscribes (outside the group) to every vehicle's retained,
signed dictionary (`PREFIX/+/dictionary/+`, docs/wire-format.md §4.9), keeps dictionaries in a
directory it may share with other workers (fleet/dictionaries.py), and holds a batch whose
dictionary it lacks for a bounded time before reporting it undecodable with the reason.

Pseudonymous vehicles (`[privacy.pseudonym]` on the vehicle, docs/privacy.md): a batch names
the vehicle `p-...`, an HMAC of its id and the rotation period of the window start under a
secret the backend shares. Given the secret (`--pseudonym-key`), the backend maps the name back
for keys bound to a vehicle (`--keys VEHICLE=FILE`): it computes that vehicle's pseudonym for
the batch's period and accepts the batch only if they are equal. Without the secret it keeps
the pseudonym (an analytics store that should not know who is who).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import AgentError, WireFormatError
from agent.events.codec import EVENT_CONTENT_TYPE, EventBody, decode_event
from agent.output.batch import CONTENT_TYPE, decompress_payload, size_per_sample
from agent.privacy.consent import pseudonym, rotation_period
from agent.wire.body import BatchBody, SignalDef, decode_body
from agent.wire.cose import Verified, verify
from agent.wire.keys import key_id, load_public_key
from fleet.dictionaries import DictionaryStore, GivenUp, HeldBatches

log = logging.getLogger("fleet.backend")

# Set by SIGTERM or SIGINT: the worker stops after the message in hand (main()).
STOPPING = threading.Event()

ROW_FIELDS = ("vehicle", "boot", "seq", "time", "signal", "value", "unit", "min", "max", "mean",
              "count", "label")


def load_keyring(specs: Sequence[str | Path]) -> tuple[dict[bytes, Ed25519PublicKey],
                                                     dict[bytes, str]]:
    """Public keys by key id, and which vehicle each key is bound to.

    A spec is `VEHICLE=FILE` (the key may sign only for that vehicle), `*=DIR` (each
    `VEHICLE.pub` in DIR bound to VEHICLE: a fleet's key folder), a FILE, or a folder of
    `*.pub` files (keys that may sign for any vehicle: fine for a demo, not for a fleet).
    """
    keyring: dict[bytes, Ed25519PublicKey] = {}
    bindings: dict[bytes, str] = {}
    for spec in map(str, specs):
        vehicle, _, location = spec.partition("=") if "=" in spec else ("", "", spec)
        path = Path(location)
        for file in sorted(path.glob("*.pub")) if path.is_dir() else [path]:
            public_key = load_public_key(file)
            keyring[key_id(public_key)] = public_key
            if vehicle:
                bindings[key_id(public_key)] = file.stem if vehicle == "*" else vehicle
    if not keyring:
        raise AgentError("no vehicle public keys given (--keys VEHICLE=FILE, FILE or DIR)")
    if len(bindings) < len(keyring):
        log.warning("%d keys are not bound to a vehicle: they may sign for any vehicle id "
                    "(give them as --keys VEHICLE=FILE)", len(keyring) - len(bindings))
    return keyring, bindings


@dataclass(frozen=True)
class Pseudonyms:
    """Maps a vehicle's rotating pseudonym back to its id (the secret stays at the backend)."""

    secret: bytes
    rotation: float

    def name_of(self, vehicle: str, time_ms: int) -> str:
        return pseudonym(self.secret, vehicle, rotation_period(time_ms, self.rotation))


@dataclass
class DeliveryTracker:
    """Which (vehicle, boot, seq) have arrived: duplicates and gaps per vehicle and boot."""

    seen: dict[tuple[str, bytes], set[int]] = field(default_factory=dict)
    duplicates: int = 0

    def observe(self, vehicle: str, boot: bytes, seq: int) -> bool:
        """Record an arrival; False when it is a duplicate."""
        seqs = self.seen.setdefault((vehicle, boot), set())
        if seq in seqs:
            self.duplicates += 1
            return False
        seqs.add(seq)
        return True

    def gaps(self) -> dict[tuple[str, bytes], list[int]]:
        """Missing sequence numbers between the lowest and highest received, per vehicle and
        boot (a backend that started late has not missed what came before it)."""
        return {key: missing for key, seqs in self.seen.items()
                if (missing := sorted(set(range(min(seqs), max(seqs) + 1)) - seqs))}


def sample_rows(body: BatchBody, dictionary: Sequence[SignalDef]) -> Iterator[dict[str, Any]]:
    """One dict per sample with physical values (stats: min/max/mean/count)."""
    common = {"vehicle": body.vehicle, "boot": body.boot.hex(), "seq": body.seq}
    for series in body.series:
        definition = dictionary[series.signal]
        for position, time_ms in enumerate(series.times_ms):
            row = {**common, "time": time_ms / 1000, "signal": definition.key,
                   "unit": definition.unit}
            if series.kind.is_stats:
                low, high, total, count = (column[position] for column in series.columns)
                # A negative scale turns the raw minimum into the physical maximum.
                low, high = sorted((definition.physical(low), definition.physical(high)))
                row.update(min=low, max=high,
                           mean=definition.physical(total / count) if count else None,
                           count=count)
            else:
                raw = series.columns[0][position]
                row["value"] = definition.physical(raw)
                # A float series travels NaN and infinities bit-exact; they have no int().
                if (definition.choices and (type(raw) is int or math.isfinite(raw))
                        and int(raw) in definition.choices):
                    row["label"] = definition.choices[int(raw)]
            yield row


@dataclass
class Receipt:
    """What the backend made of one message."""

    ok: bool
    body: BatchBody | None = None
    size: int = 0
    duplicate: bool = False
    error: str = ""
    event: EventBody | None = None


class Backend:
    """Verification, de-duplication and decoding, independent of MQTT (tests drive it directly)."""

    def __init__(self, keyring: Mapping[bytes, Ed25519PublicKey],
                 bindings: Mapping[bytes, str] | None = None,
                 pseudonyms: Pseudonyms | None = None, *,
                 dictionary_cache: Path | None = None, hold: float = 30.0) -> None:
        self.keyring = keyring
        self.bindings = bindings or {}
        self.pseudonyms = pseudonyms
        self.tracker = DeliveryTracker()
        self.event_tracker = DeliveryTracker()
        self.dictionaries = DictionaryStore(keyring, dictionary_cache)
        self.held = HeldBatches(hold)
        self.given_up: list[GivenUp] = []
        self.verified = 0
        self.events = 0
        self.rejected = 0
        self.undecodable = 0
        self.decoded = 0
        self.dictionaries_rejected = 0
        self.samples = 0
        self.bytes = 0

    def receive(self, envelope: bytes) -> Receipt:
        """A telemetry batch: verified, its vehicle checked, de-duplicated."""
        try:
            verified = self._verify(envelope, CONTENT_TYPE)
            body = decode_body(decompress_payload(verified.payload))
            body = dataclasses.replace(body, vehicle=self._vehicle(verified.kid, body.vehicle,
                                                                   body.t0_ms))
        except WireFormatError as exc:
            self.rejected += 1
            return Receipt(ok=False, size=len(envelope), error=str(exc))
        self.verified += 1
        if body.dictionary is not None:
            try:
                self.dictionaries.add(body.dictionary_id, body.dictionary, envelope)
            except WireFormatError as exc:  # the batch is still good; its dictionary is not
                self.dictionaries_rejected += 1
                log.warning("batch %d: dictionary not cached: %s", body.seq, exc)
        fresh = self.tracker.observe(body.vehicle, body.boot, body.seq)
        if fresh:
            self.samples += body.sample_count
            self.bytes += len(envelope)
        return Receipt(ok=True, body=body, size=len(envelope), duplicate=not fresh)

    def receive_event(self, envelope: bytes) -> Receipt:
        """An event (`{prefix}/{vehicle}/events`): verified, checked, de-duplicated."""
        try:
            verified = self._verify(envelope, EVENT_CONTENT_TYPE)
            event = decode_event(verified.payload)
            event = dataclasses.replace(event, vehicle=self._vehicle(verified.kid, event.vehicle,
                                                                     event.time_ms))
        except WireFormatError as exc:
            self.rejected += 1
            return Receipt(ok=False, size=len(envelope), error=str(exc))
        self.events += 1
        fresh = self.event_tracker.observe(event.vehicle, event.boot, event.seq)
        return Receipt(ok=True, size=len(envelope), duplicate=not fresh, event=event)

    def _verify(self, envelope: bytes, content_type: str) -> Verified:
        """Verified once here, so that the kid bound to a vehicle below is the one whose key
        checked the signature, not one read from the envelope a second time."""
        verified = verify(envelope, self.keyring)
        if verified.content_type != content_type:
            raise WireFormatError(f"unexpected content type {verified.content_type!r}")
        return verified

    def _vehicle(self, kid: bytes, named: str, time_ms: int) -> str:
        """The vehicle a payload names, mapped back from its pseudonym when this backend can;
        WireFormatError when the key that verified it (`kid`) belongs to another vehicle."""
        owner = self.bindings.get(kid)
        if owner is None:
            return named
        if self.pseudonyms is not None and named == self.pseudonyms.name_of(owner, time_ms):
            return owner
        if owner != named:
            raise WireFormatError(f"payload claims vehicle {named!r} but is signed with the "
                                  f"key of {owner!r}")
        return named

    def rows(self, body: BatchBody) -> Iterator[dict[str, Any]] | None:
        """The batch's sample rows; None (counted undecodable) without its dictionary."""
        dictionary = self.dictionaries.lookup(body.dictionary_id)
        if dictionary is None or body.highest_signal >= len(dictionary):
            self.undecodable += 1
            return None
        return sample_rows(body, dictionary)

    def receive_dictionary(self, envelope: bytes) -> list[BatchBody]:
        """A signed dictionary (`{prefix}/{vehicle}/dictionary/{did}`, retained): remembered,
        and the batches that waited for it are returned, ready to decode."""
        try:
            did = self.dictionaries.add_envelope(envelope)
        except WireFormatError as exc:
            self.dictionaries_rejected += 1
            log.warning("dictionary rejected (%d bytes): %s", len(envelope), exc)
            return []
        return self._decodable(self.held.release(did))

    def admit(self, body: BatchBody, now: float) -> list[BatchBody]:
        """A fresh batch: the batches now ready to decode (it, and those that waited for the
        dictionary it carries), or none while it waits for its dictionary (`hold` s at most)."""
        if self.dictionaries.lookup(body.dictionary_id) is None:
            for given_up in self.held.hold(body, now):
                self._give_up(given_up)
            return []
        return self._decodable([*self.held.release(body.dictionary_id), body])

    def _decodable(self, bodies: list[BatchBody]) -> list[BatchBody]:
        """`bodies` whose series all lie within their dictionary; the others given up."""
        ready = []
        for body in bodies:
            dictionary = self.dictionaries.lookup(body.dictionary_id)
            assert dictionary is not None  # only batches whose dictionary is known come here
            if body.highest_signal >= len(dictionary):
                self._give_up(GivenUp(body, "a series names a signal beyond the "
                                            f"{len(dictionary)} entries of dictionary "
                                            f"{body.dictionary_id.hex()}"))
            else:
                ready.append(body)
        return ready

    def expire(self, now: float) -> None:
        """Give up the batches that waited longer than the hold bound."""
        for given_up in self.held.expired(now):
            self._give_up(given_up)

    def finish(self) -> None:
        """At exit: the batches still waiting are undecodable."""
        for given_up in self.held.give_up_all("not received before the worker stopped"):
            self._give_up(given_up)

    def _give_up(self, given_up: GivenUp) -> None:
        self.undecodable += 1
        self.given_up.append(given_up)
        body = given_up.body
        log.warning("batch %s boot %s seq %d undecodable: %s", body.vehicle, body.boot.hex(),
                    body.seq, given_up.reason)

    def report(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "rejected": self.rejected,
            "duplicates": self.tracker.duplicates,
            "decoded": self.decoded,
            "undecodable": self.undecodable,
            "undecodable_batches": [
                {"vehicle": g.body.vehicle, "boot": g.body.boot.hex(), "seq": g.body.seq,
                 "reason": g.reason} for g in self.given_up],
            "held": len(self.held),
            "dictionaries_rejected": self.dictionaries_rejected,
            "samples": self.samples,
            "bytes": self.bytes,
            "gaps": _gaps(self.tracker),
            "events": self.events,
            "event_duplicates": self.event_tracker.duplicates,
            "event_gaps": _gaps(self.event_tracker),
        }


def _gaps(tracker: DeliveryTracker) -> list[dict[str, Any]]:
    return [{"vehicle": vehicle, "boot": boot.hex(), "missing": missing}
            for (vehicle, boot), missing in tracker.gaps().items()]


def event_line(receipt: Receipt) -> str:
    event = receipt.event
    assert event is not None
    at = datetime.fromtimestamp(event.time_ms / 1000, UTC).strftime("%H:%M:%S")
    flag = " DUPLICATE" if receipt.duplicate else ""
    where = "".join(f", {name} {lat:.5f},{lon:.5f}" for name, (lat, lon)
                    in event.positions.items())
    return (f"event {event.vehicle} boot {event.boot.hex()[:8]} seq {event.seq}{flag}: "
            f"{event.type} at {at} UTC {json.dumps(event.data, sort_keys=True)}{where}")


def event_row(event: EventBody) -> dict[str, Any]:
    """An event as one JSON Lines row (the sample rows' vehicle/boot/seq/time keys, and the
    event's own)."""
    return {"vehicle": event.vehicle, "boot": event.boot.hex(), "seq": event.seq,
            "time": event.time_ms / 1000, "event": event.type, "data": event.data,
            "positions": {name: list(at) for name, at in event.positions.items()}}


def summary_line(receipt: Receipt) -> str:
    if not receipt.ok or receipt.body is None:
        return f"REJECTED {receipt.size} bytes: {receipt.error}"
    body = receipt.body
    samples = body.sample_count
    start = datetime.fromtimestamp(body.t0_ms / 1000, UTC).strftime("%H:%M:%S")
    end = datetime.fromtimestamp(body.t1_ms / 1000, UTC).strftime("%H:%M:%S")
    flag = " DUPLICATE" if receipt.duplicate else ""
    return (f"verified {body.vehicle} boot {body.boot.hex()[:8]} seq {body.seq}{flag}: "
            f"{start}-{end} UTC, {len(body.series)} signals, {samples} samples, "
            f"{size_per_sample(receipt.size, samples)}, "
            f"clock {body.clock}"
            + (f", consent {body.privacy['consent']} v{body.privacy['ver']}"
               if body.privacy else ""))


class RowWriter:
    def __init__(self, out: TextIO, fmt: str) -> None:
        self._out = out
        self._csv = csv.DictWriter(out, ROW_FIELDS, extrasaction="ignore") if fmt == "csv" \
            else None
        if self._csv:
            self._csv.writeheader()

    def write(self, rows: Iterator[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv:
                self._csv.writerow(row)
            else:
                self._out.write(json.dumps(row) + "\n")
        self._out.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/backend",
        description="Receive batches from a fleet over MQTT, verify their signatures, report "
                    "gaps and duplicates, and decode them to physical values.",
        epilog="Other commands (each with its own --help): `tools/backend query DIR ...` "
               "asks the Parquet data set; `tools/backend ingest FILE...` stores saved "
               "batches and vehicle spools in it; `tools/backend dictionaries prune` clears "
               "retained dictionaries no batch needs (docs/backend.md).")
    parser.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument("--port", type=int, default=8883, help="broker port (default: 8883)")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate of the broker")
    parser.add_argument("--cert", type=Path, help="backend client certificate")
    parser.add_argument("--key", type=Path, help="backend client private key")
    parser.add_argument("--plaintext", action="store_true",
                        help="connect without TLS (local tests only)")
    parser.add_argument("--keys", action="append", required=True, metavar="[VEHICLE=]PATH",
                        help="vehicle public key: VEHICLE=FILE binds the key to that vehicle, "
                             "'*=DIR' binds each VEHICLE.pub in DIR to VEHICLE; a FILE or a "
                             "folder of *.pub accepts any vehicle (repeatable)")
    parser.add_argument("--prefix", default="fleet", help="topic prefix (default: fleet)")
    parser.add_argument("--group", default="backend",
                        help="shared-subscription group; instances in one group split the "
                             "fleet (default: backend)")
    parser.add_argument("--format", choices=("summary", "jsonl", "csv"), default="summary",
                        help="summary line per batch and event, or one row per sample (and, "
                             "in jsonl, one per event; CSV prints events on stderr) "
                             "(default: summary)")
    parser.add_argument("--output", "-o", type=Path, help="write rows here (default: stdout)")
    parser.add_argument("--count", type=int, help="exit after this many batches")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds")
    parser.add_argument("--idle", type=float, metavar="SECONDS",
                        help="exit when no batch has arrived for this many seconds")
    parser.add_argument("--report", type=Path,
                        help="write the delivery report (gaps, duplicates) as JSON here")
    parser.add_argument("--dataset", type=Path, metavar="DIR",
                        help="write the Parquet data set here: samples, events and batches, "
                             "partitioned by date and vehicle (docs/backend.md; needs "
                             "edge-agent-fleet[parquet])")
    parser.add_argument("--worker", metavar="NAME",
                        help="this worker's name in the data set's file names; must differ "
                             "between workers sharing --dataset (default: HOST-PID)")
    parser.add_argument("--flush", type=float, default=60.0, metavar="SECONDS",
                        help="write the data set's files this often, and at exit "
                             "(default: 60)")
    parser.add_argument("--dictionary-cache", type=Path, metavar="DIR",
                        help="keep signal dictionaries here as signed files, one per id; "
                             "workers may share the directory (default: memory only)")
    parser.add_argument("--hold", type=float, default=30.0, metavar="SECONDS",
                        help="how long a batch waits for its dictionary before it is "
                             "reported undecodable (default: 30)")
    parser.add_argument("--pseudonym-key", type=Path, metavar="FILE",
                        help="the secret shared with pseudonymous vehicles: map their "
                             "pseudonyms back to the ids of --keys VEHICLE=FILE")
    parser.add_argument("--pseudonym-rotation", type=float, default=86400.0, metavar="S",
                        help="the vehicles' [privacy.pseudonym] rotation (default: 86400)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["query"]:  # `tools/backend query DIR ...`: the data set, not the broker
        from fleet.query import main as query
        return query(argv[1:])
    if argv[:1] == ["ingest"]:  # `tools/backend ingest FILE...`: saved batches, offline
        from fleet.ingest import main as ingest
        return ingest(argv[1:])
    if argv[:2] == ["dictionaries", "prune"]:  # retained dictionaries no batch needs
        from fleet.prune import main as prune
        return prune(argv[2:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s backend: %(message)s")
    # SIGTERM (systemd, Kubernetes, a supervisor) and SIGINT (Ctrl-C) end a worker between two
    # messages, never inside one: the batch in hand is finished (its samples and its row in
    # `batches` both written, or neither), then what it decoded since the last flush is
    # written. Its broker has acknowledged those batches already; killed without the flush,
    # or interrupted halfway through one, they would be lost or half stored.
    signal.signal(signal.SIGTERM, lambda signum, frame: STOPPING.set())
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored: a background `&`
        signal.signal(signal.SIGINT, lambda signum, frame: STOPPING.set())
    try:
        return _serve(args)
    except AgentError as exc:
        print(f"backend: error: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    pseudonyms = None
    # As the vehicle's [privacy.pseudonym] rotation: below 1 ms (or NaN) the rotation period
    # divides by zero, at the first pseudonymous message.
    if not (math.isfinite(args.pseudonym_rotation) and args.pseudonym_rotation >= 0.001):
        raise AgentError(f"--pseudonym-rotation {args.pseudonym_rotation}: must be at least "
                         "0.001 s, as the vehicles' [privacy.pseudonym] rotation")
    if args.pseudonym_key is not None:
        try:
            pseudonyms = Pseudonyms(args.pseudonym_key.read_bytes(), args.pseudonym_rotation)
        except OSError as exc:
            raise AgentError(f"--pseudonym-key: cannot read {args.pseudonym_key}") from exc
    if not (math.isfinite(args.hold) and args.hold >= 0):
        raise AgentError(f"--hold {args.hold}: must be a number of seconds, 0 or more")
    backend = Backend(*load_keyring(args.keys), pseudonyms=pseudonyms,
                      dictionary_cache=args.dictionary_cache, hold=args.hold)
    dataset = _dataset(args)  # before connecting: a missing extra fails at once
    arrivals: queue.Queue[tuple[str, bytes]] = queue.Queue()
    connected = queue.Queue[str]()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if not args.plaintext:
        if not (args.ca_cert and args.cert and args.key):
            raise AgentError("TLS needs --ca-cert, --cert and --key (or --plaintext)")
        client.tls_set(ca_certs=str(args.ca_cert), certfile=str(args.cert),
                       keyfile=str(args.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    # Batches and events are shared out among the group's workers; every worker gets every
    # dictionary (retained, so also those published before it started).
    subscriptions = [*(f"$share/{args.group}/{args.prefix}/+/{leaf}"
                       for leaf in ("telemetry", "events")),
                     f"{args.prefix}/+/dictionary/+"]

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if reason.is_failure:
            connected.put(f"refused: {reason}")
            return
        client.subscribe([(topic, 1) for topic in subscriptions])

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                     properties: Any) -> None:
        # Ready only at the SUBACK: a batch published before it would not reach us.
        refused = [str(reason) for reason in reasons if reason.is_failure]
        connected.put(f"subscription refused: {', '.join(refused)}" if refused else "")

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda client, userdata, message: arrivals.put(
        (message.topic, bytes(message.payload)))
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        problem = connected.get(timeout=15)
    except queue.Empty:
        problem = "no answer from the broker"
    if problem:
        client.loop_stop()
        raise AgentError(f"cannot connect to {args.host}:{args.port}: {problem}")
    # The readiness line scripts and tests wait for before they publish.
    log.info("subscribed to %s", ", ".join(subscriptions))
    out = args.output.open("w", encoding="utf-8", newline="") if args.output else sys.stdout
    writer = RowWriter(out, args.format) if args.format != "summary" else None
    flushed_at = time.monotonic()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    received = 0
    last_arrival = time.monotonic()
    # When this worker took its first batch and finished its last (wall clock, for
    # throughput over a group of workers: tools/bench --only fleet), and its CPU time.
    first_batch_at = last_batch_at = first_batch_cpu = last_batch_cpu = 0.0
    try:
        while (args.count is None or received < args.count) and not STOPPING.is_set():
            wait = 0.5 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            backend.expire(time.monotonic())
            if dataset is not None and time.monotonic() - flushed_at >= args.flush:
                dataset.flush()
                flushed_at = time.monotonic()
            try:
                topic, envelope = arrivals.get(timeout=min(wait, 0.5))
            except queue.Empty:
                if args.idle is not None and time.monotonic() - last_arrival > args.idle:
                    break
                continue
            if is_dictionary_topic(topic, args.prefix):
                _decode(backend, backend.receive_dictionary(envelope), writer, dataset)
                continue
            last_arrival = time.monotonic()
            if topic.endswith("/events"):
                event_receipt = backend.receive_event(envelope)
                _show_event(event_receipt, writer, args.format)
                if dataset and event_receipt.event is not None and not event_receipt.duplicate:
                    dataset.add_event(event_receipt.event)
                continue
            received += 1
            if not first_batch_at:
                first_batch_at, first_batch_cpu = time.time(), time.process_time()
            receipt = backend.receive(envelope)
            if writer is None or not receipt.ok:
                print(summary_line(receipt), file=sys.stdout if writer is None else sys.stderr,
                      flush=True)
            if receipt.ok and receipt.body is not None and not receipt.duplicate:
                if dataset is not None:
                    dataset.add_received(receipt.body)
                _decode(backend, backend.admit(receipt.body, time.monotonic()), writer,
                        dataset)
            last_batch_at, last_batch_cpu = time.time(), time.process_time()
        _await_held(backend, arrivals, writer, dataset, deadline, args.prefix)
    except KeyboardInterrupt:
        pass
    finally:
        client.loop_stop()
        client.disconnect()
        backend.finish()
        if dataset is not None:
            dataset.flush()
        if args.output:
            out.close()
    report = {**backend.report(), "first_batch_at": first_batch_at,
              "last_batch_at": last_batch_at,
              "busy_cpu_seconds": round(last_batch_cpu - first_batch_cpu, 3),
              "cpu_seconds": round(time.process_time(), 3)}
    print(json.dumps(report), file=sys.stderr)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if backend.rejected else 0


def is_dictionary_topic(topic: str, prefix: str) -> bool:
    """`{prefix}/{vehicle}/dictionary/{did}` (a vehicle named `dictionary` is still a
    vehicle: the levels are counted)."""
    levels = topic[len(prefix) + 1:].split("/") if topic.startswith(prefix + "/") else []
    return len(levels) == 3 and levels[1] == "dictionary"


def _dataset(args: argparse.Namespace) -> Any:
    """The Parquet data set writer for --dataset, or None."""
    if args.dataset is None:
        return None
    if not (math.isfinite(args.flush) and args.flush > 0):
        raise AgentError(f"--flush {args.flush}: must be a number of seconds above 0")
    try:
        from fleet.dataset import DatasetWriter
    except ImportError as exc:
        raise AgentError(f"--dataset needs pyarrow ({exc}): install "
                         "edge-agent-fleet[parquet]") from exc
    try:
        return DatasetWriter(args.dataset, args.worker or f"{socket.gethostname()}-{os.getpid()}")
    except ValueError as exc:
        raise AgentError(f"--worker: {exc}") from exc


def _decode(backend: Backend, bodies: list[BatchBody], writer: RowWriter | None,
            dataset: Any = None) -> None:
    """Decode batches whose dictionary is known: rows out, Parquet tables, or only counted."""
    for body in bodies:
        rows = backend.rows(body)
        if rows is None:
            continue
        backend.decoded += 1
        if writer is not None:
            writer.write(rows)
        if dataset is not None:
            dictionary = backend.dictionaries.lookup(body.dictionary_id)
            assert dictionary is not None  # rows() found it
            dataset.add_samples(body, dictionary)


def _await_held(backend: Backend, arrivals: queue.Queue[tuple[str, bytes]],
                writer: RowWriter | None, dataset: Any, deadline: float | None,
                prefix: str) -> None:
    """After the last batch (--count, --idle): the batches on hold may still get their
    dictionary, within the hold bound (and --timeout)."""
    while len(backend.held) and not STOPPING.is_set():
        now = time.monotonic()
        backend.expire(now)
        wait = backend.held.bound if deadline is None else min(backend.held.bound,
                                                                deadline - now)
        if wait <= 0 or not len(backend.held):
            return
        try:
            topic, envelope = arrivals.get(timeout=min(wait, 0.5))
        except queue.Empty:
            continue
        if is_dictionary_topic(topic, prefix):
            _decode(backend, backend.receive_dictionary(envelope), writer, dataset)


def _show_event(receipt: Receipt, writer: RowWriter | None, fmt: str) -> None:
    if not receipt.ok or receipt.event is None:
        print(summary_line(receipt), file=sys.stderr if writer else sys.stdout, flush=True)
    elif fmt == "jsonl" and writer is not None:
        if not receipt.duplicate:
            writer.write(iter([event_row(receipt.event)]))
    else:  # summary, or CSV (whose rows are samples): a line per event
        print(event_line(receipt), file=sys.stderr if writer else sys.stdout, flush=True)


if __name__ == "__main__":
    sys.exit(main())
