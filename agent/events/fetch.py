"""Fetch on demand: a signed request from the backend for the ring's look-back, now.

A request is a COSE_Sign1 envelope (agent/wire/cose.py, Ed25519, a key pinned in [ota]
trusted_keys) with content type CONTENT_TYPE around a CBOR map (docs/fetch.md):

    {"type": "edge-agent-fetch", "id": h'..16 bytes..', "issued_at": 1767225600,
     "expires_at": 1767225900, "target": {"vehicle": "demo-0001"},
     "signals": ["can0.BMS_CellStats.*"], "last_ms": 60000 | "from_ms": .., "to_ms": ..,
     "max_samples": 5000 (optional)}

The signature, key and content type are checked by the same code as config updates
(agent/ota/update.py `open_signed`); then the document, the target (one vehicle: a request for
a group would make every car of it upload at once), the expiry, and replay: a request id is
remembered until its request expires (`FetchMemory`, persisted next to the OTA store), so an
envelope captured off the broker cannot be played again. Validity is capped at
MAX_VALIDITY_S, which bounds how long an id is remembered; at most MAX_REMEMBERED are.

An accepted request is acked on `{prefix}/{vehicle}/fetch/ack`, its samples are read from the
ring and handed to the event sink as a `fetch` event, so the owner's consent and location
policy filter it exactly like a trigger's capture, and it is signed and spooled like any event.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cbor2

from agent.events.model import Event
from agent.ota.update import Trust, UpdateRejected, is_int, is_int64, open_signed
from agent.runtime.files import atomic_write
from agent.wire.cose import Signer

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.edge-agent.fetch+cbor"
DOCUMENT_TYPE = "edge-agent-fetch"
MAX_REQUEST_BYTES = 16 * 1024          # a list of globs and a few integers
MAX_PATTERNS = 64
MAX_VALIDITY_S = 24 * 3600             # bounds how long an id must be remembered
MAX_REMEMBERED = 1024                  # ids of unexpired requests kept against replay
MAX_SAMPLES = 20_000                   # per fetch event: ~200 KB of CBOR before zstd
MAX_RANGE_MS = 24 * 3600 * 1000
ID_BYTES = 16
MEMORY_FILE = "fetch-seen.json"
QUEUE_LIMIT = 16


class Reason(StrEnum):
    """Why a request was refused: the first five are the shared signed-command checks."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    BAD_DOCUMENT = "bad-document"
    TOO_LARGE = "too-large"
    WRONG_TARGET = "wrong-target"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    BUSY = "busy"        # too many unexpired ids remembered, or the queue is full
    DISABLED = "disabled"  # [ota] is off or pins no key


class FetchRejected(Exception):
    def __init__(self, reason: Reason, message: str, request_id: bytes | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class FetchRequest:
    id: bytes
    issued_at: int
    expires_at: int
    vehicle: str
    signals: tuple[str, ...]
    last_ms: int | None
    from_ms: int | None
    to_ms: int | None
    max_samples: int
    kid: bytes


def sign_fetch(signer: Signer, *, vehicle: str, signals: Sequence[str], expires_at: int,
               last_ms: int | None = None, from_ms: int | None = None,
               to_ms: int | None = None, max_samples: int | None = None,
               request_id: bytes | None = None, issued_at: int | None = None) -> bytes:
    """The backend side: a signed request (the signer's content type must be CONTENT_TYPE)."""
    if (last_ms is None) == (from_ms is None or to_ms is None):
        raise ValueError("a fetch asks for either last_ms or from_ms and to_ms")
    document: dict[str, Any] = {
        "type": DOCUMENT_TYPE, "id": request_id or os.urandom(ID_BYTES),
        "issued_at": int(time.time()) if issued_at is None else issued_at,
        "expires_at": expires_at, "target": {"vehicle": vehicle}, "signals": list(signals)}
    if last_ms is not None:
        document["last_ms"] = last_ms
    else:
        document["from_ms"], document["to_ms"] = from_ms, to_ms
    if max_samples is not None:
        document["max_samples"] = max_samples
    return signer.sign(cbor2.dumps(document))


def open_fetch(envelope: bytes, trust: Trust) -> FetchRequest:
    """Signature (shared with config updates) and document shape."""
    try:
        verified = open_signed(envelope, trust.keys, CONTENT_TYPE, MAX_REQUEST_BYTES)
    except UpdateRejected as exc:
        raise FetchRejected(Reason(str(exc.reason)), exc.message) from exc
    return parse_document(verified.payload, verified.kid)


def check_fetch(envelope: bytes, trust: Trust, memory: FetchMemory,
                now: float | None = None) -> FetchRequest:
    """Every check in order; an accepted request's id is remembered (persisted) before this
    returns, so the same envelope is refused as replayed from then on, across restarts."""
    request = open_fetch(envelope, trust)
    if request.vehicle != trust.vehicle:
        raise FetchRejected(Reason.WRONG_TARGET, f"request for vehicle {request.vehicle}; this "
                            f"is vehicle {trust.vehicle}", request.id)
    now = time.time() if now is None else now
    if request.expires_at <= now:
        raise FetchRejected(Reason.EXPIRED, f"expired at {request.expires_at} (now {int(now)})",
                            request.id)
    memory.remember(request, now)
    return request


def parse_document(payload: bytes, kid: bytes) -> FetchRequest:
    try:
        document = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise FetchRejected(Reason.BAD_DOCUMENT, f"payload is not CBOR: {exc}") from exc
    if not isinstance(document, Mapping) or document.get("type") != DOCUMENT_TYPE:
        raise FetchRejected(Reason.BAD_DOCUMENT, f"payload is not an {DOCUMENT_TYPE} document")
    request_id = document.get("id")
    if not isinstance(request_id, bytes) or len(request_id) != ID_BYTES:
        raise FetchRejected(Reason.BAD_DOCUMENT, f"id must be {ID_BYTES} bytes")
    target = document.get("target")
    signals = document.get("signals")
    issued_at, expires_at = document.get("issued_at"), document.get("expires_at")
    last_ms = document.get("last_ms")
    from_ms, to_ms = document.get("from_ms"), document.get("to_ms")
    max_samples = document.get("max_samples", MAX_SAMPLES)
    ranged = from_ms is not None or to_ms is not None
    problems = [name for name, ok in (
        ("issued_at", is_int64(issued_at)),
        ("expires_at", is_int64(expires_at)),
        # Caps the time an id must be remembered: no request is valid for longer.
        ("validity", is_int64(issued_at) and is_int64(expires_at)
         and 0 < expires_at - issued_at <= MAX_VALIDITY_S),
        ("target", isinstance(target, Mapping) and set(target) == {"vehicle"}
         and isinstance(target["vehicle"], str)),
        ("signals", isinstance(signals, list) and 0 < len(signals) <= MAX_PATTERNS
         and all(isinstance(s, str) and 0 < len(s) <= 256 for s in signals)),
        ("range", (last_ms is None) == ranged),
        ("last_ms", last_ms is None or (is_int(last_ms) and 0 < last_ms <= MAX_RANGE_MS)),
        ("from_ms/to_ms", not ranged or (is_int64(from_ms) and is_int64(to_ms)
                                         and 0 <= to_ms - from_ms <= MAX_RANGE_MS)),
        ("max_samples", is_int(max_samples) and 0 < max_samples <= MAX_SAMPLES),
    ) if not ok]
    if problems:
        raise FetchRejected(Reason.BAD_DOCUMENT, f"malformed field(s): {', '.join(problems)}",
                            request_id)
    return FetchRequest(id=request_id, issued_at=issued_at, expires_at=expires_at,
                        vehicle=target["vehicle"], signals=tuple(signals), last_ms=last_ms,
                        from_ms=from_ms, to_ms=to_ms, max_samples=max_samples, kid=kid)


class FetchMemory:
    """Ids of accepted requests until they expire, in `[state] directory`/ota/fetch-seen.json
    (written atomically): a replayed request is refused across restarts. Bounded by
    MAX_REMEMBERED; when that many unexpired ids are held, new requests are refused as busy
    rather than forgetting an id whose request could then be replayed."""

    def __init__(self, state_directory: Path, limit: int = MAX_REMEMBERED) -> None:
        self.path = state_directory / "ota" / MEMORY_FILE
        self.limit = limit
        self._lock = threading.Lock()
        self._seen: dict[bytes, int] = self._load()

    def _load(self) -> dict[bytes, int]:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            return {bytes.fromhex(k): int(v) for k, v in stored.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, AttributeError) as exc:
            # Damaged: forgetting the ids would open a replay window, so the file is kept for
            # inspection and requests are judged without it (each still has its expiry).
            log.error("%s is damaged (%s); remembered fetch ids lost", self.path, exc)
            return {}

    def remember(self, request: FetchRequest, now: float) -> None:
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if request.id in self._seen:
                raise FetchRejected(Reason.REPLAYED, f"request {request.id.hex()} was accepted "
                                    "before", request.id)
            if len(self._seen) >= self.limit:
                raise FetchRejected(Reason.BUSY, f"{len(self._seen)} unexpired requests "
                                    "remembered; try again when some expire", request.id)
            self._seen[request.id] = request.expires_at
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(
                {k.hex(): v for k, v in self._seen.items()}).encode())

    def __len__(self) -> int:
        return len(self._seen)


Capture = Callable[[Sequence[str], int, int], Mapping[str, list[tuple[int, float]]]]


@dataclass(frozen=True)
class FetchSource:
    """What the running pipeline lends a fetch: its signal keys, the newest sample time in
    the ring, a capture over the ring, the event sink, and whether the consent lets a key
    out (the sink filters again: this only keeps withheld samples out of the cap and count)."""

    keys: Sequence[str]
    newest_ms: int | None
    capture: Capture
    emit: Callable[[Event], None]
    allowed: Callable[[str], bool] = lambda key: True


def fetch_event(request: FetchRequest, source: FetchSource, now_ms: int) -> Event:
    """The `fetch` event of an accepted request: every sample of the matching signals in the
    range, newest kept when there are more than max_samples (then `truncated` is true)."""
    keys = [k for k in source.keys if source.allowed(k)
            and any(fnmatch.fnmatchcase(k, p) for p in request.signals)]
    if request.last_ms is not None:
        # Relative to the newest sample held: on a replayed or a late clock, "the last
        # minute" is still the minute the vehicle recorded last.
        to_ms = source.newest_ms if source.newest_ms is not None else now_ms
        from_ms = to_ms - request.last_ms
    else:
        assert request.from_ms is not None and request.to_ms is not None
        from_ms, to_ms = request.from_ms, request.to_ms
    captured = source.capture(keys, from_ms, to_ms)
    total = sum(len(rows) for rows in captured.values())
    samples = {k: [[t, v] for t, v in rows] for k, rows in captured.items()}
    truncated = total > request.max_samples
    if truncated:
        samples = _newest(captured, request.max_samples)
    return Event("fetch", now_ms, "technical", {
        "request": request.id.hex(), "from_ms": from_ms, "to_ms": to_ms,
        "signals": list(request.signals), "samples": samples, "total": total,
        "truncated": truncated})


def _newest(captured: Mapping[str, list[tuple[int, float]]],
            limit: int) -> dict[str, list[list[float]]]:
    rows = sorted(((t, k, v) for k, series in captured.items() for t, v in series),
                  reverse=True)[:limit]
    kept: dict[str, list[list[float]]] = {}
    for t, k, v in sorted(rows):
        kept.setdefault(k, []).append([t, v])
    return kept


@dataclass
class FetchCounters:
    accepted: int = 0
    rejected: dict[str, int] | None = None

    def count(self, reason: str) -> None:
        if self.rejected is None:
            self.rejected = {}
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": dict(self.rejected or {})}


class FetchHandler:
    """Takes requests off the MQTT thread (`offer`) and runs them one at a time on its own.

    `trust` is None when [ota] is off or pins no key: requests are then refused as disabled.
    `source` lends the running pipeline (and holds its lock for the capture); `publish` sends
    the ack on a leaf of the vehicle's topics."""

    def __init__(self, trust: Callable[[], Trust | None], memory: FetchMemory,
                 run_on_pipeline: Callable[[Callable[[FetchSource], None]], None],
                 publish: Callable[[str, bytes], None]) -> None:
        self._trust = trust
        self._memory = memory
        self._run = run_on_pipeline
        self._publish = publish
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_LIMIT)
        self.counters = FetchCounters()
        self._thread = threading.Thread(target=self._work, name="fetch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(10)

    def offer(self, envelope: bytes) -> None:
        try:
            self._queue.put_nowait(envelope)
        except queue.Full:  # a flood of requests must not grow memory: refuse, counted
            self._refuse(FetchRejected(Reason.BUSY, f"{QUEUE_LIMIT} requests already queued"))

    def _work(self) -> None:
        while (envelope := self._queue.get()) is not None:
            try:
                self.handle(envelope)
            except Exception:  # a bug here must not stop later requests
                log.exception("fetch: request failed")

    def handle(self, envelope: bytes) -> None:
        trust = self._trust()
        try:
            if trust is None:
                raise FetchRejected(Reason.DISABLED, "[ota] is disabled or pins no key")
            request = check_fetch(envelope, trust, self._memory)
        except FetchRejected as rejected:
            self._refuse(rejected)
            return
        self.counters.accepted += 1
        log.info("fetch %s accepted (key %s): %s", request.id.hex(), request.kid.hex(),
                 ", ".join(request.signals))
        self._ack(request.id, "accepted", None, f"{len(request.signals)} pattern(s)")
        self._run(lambda source: source.emit(
            fetch_event(request, source, int(time.time() * 1000))))

    def _refuse(self, rejected: FetchRejected) -> None:
        self.counters.count(str(rejected.reason))
        log.warning("fetch request%s rejected (%s): %s",
                    f" {rejected.request_id.hex()}" if rejected.request_id else "",
                    rejected.reason, rejected.message)
        self._ack(rejected.request_id, "rejected", str(rejected.reason), rejected.message)

    def _ack(self, request_id: bytes | None, outcome: str, reason: str | None,
             message: str) -> None:
        self._publish("fetch/ack", json.dumps({
            "request": request_id.hex() if request_id else None, "outcome": outcome,
            "reason": reason, "message": message, "at": round(time.time(), 3)}).encode())
