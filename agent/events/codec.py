"""The event document on the wire: COSE_Sign1 (agent/wire/cose.py) over zstd-compressed CBOR.

    {"v": 1, "veh": vehicle id or pseudonym, "boot": bytes, "seq": per-boot event number,
     "type": "trip_end", "t": ms, "clk": clock quality, "cfg": config version,
     "prv": {"consent": level, "ver": version}, "data": {...}, "pos": {name: [lat, lon]}}

docs/events.md describes each type's `data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import WireFormatError
from agent.output.batch import decompress_payload
from agent.wire.body import byte_string
from agent.wire.cose import verify

EVENT_CONTENT_TYPE = "application/vnd.edge-agent.event+cbor+zstd"
EVENT_SCHEMA = 1


@dataclass(frozen=True)
class EventBody:
    vehicle: str
    boot: bytes
    seq: int
    type: str
    time_ms: int
    clock: str
    config_version: int
    privacy: Mapping[str, Any]
    data: Mapping[str, Any]
    positions: Mapping[str, tuple[float, float]]


def encode_event(body: EventBody) -> bytes:
    document = {"v": EVENT_SCHEMA, "veh": body.vehicle, "boot": body.boot, "seq": body.seq,
                "type": body.type, "t": body.time_ms, "clk": body.clock,
                "cfg": body.config_version, "prv": dict(body.privacy), "data": dict(body.data),
                "pos": {name: list(p) for name, p in body.positions.items()}}
    return zstandard.ZstdCompressor(level=3).compress(cbor2.dumps(document))


def open_event(envelope: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> EventBody:
    verified = verify(envelope, keys)
    if verified.content_type != EVENT_CONTENT_TYPE:
        raise WireFormatError(f"unexpected content type {verified.content_type!r}")
    return decode_event(verified.payload)


def decode_event(payload: bytes) -> EventBody:
    """The event in a verified envelope's payload (the backend verifies once, keeps the kid)."""
    try:
        document = cbor2.loads(decompress_payload(payload))
        if document["v"] != EVENT_SCHEMA:
            raise WireFormatError(f"unsupported event schema {document['v']!r}")
        return EventBody(
            vehicle=str(document["veh"]), boot=byte_string(document["boot"], "boot", 16),
            seq=int(document["seq"]),
            type=str(document["type"]), time_ms=int(document["t"]), clock=str(document["clk"]),
            config_version=int(document["cfg"]), privacy=dict(document["prv"]),
            data=dict(document["data"]),
            positions={str(k): (float(v[0]), float(v[1])) for k, v in document["pos"].items()})
    except WireFormatError:
        raise
    except Exception as exc:  # cbor2 and malformed documents raise several types
        raise WireFormatError(f"event body does not follow schema {EVENT_SCHEMA}: "
                              f"{type(exc).__name__}: {exc}") from exc
