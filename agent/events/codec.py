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
from agent.wire.body import UINT64_MAX, byte_string, integer, privacy_field, shown, time_ms
from agent.wire.cose import verify

EVENT_CONTENT_TYPE = "application/vnd.edge-agent.event+cbor+zstd"
EVENT_SCHEMA = 1
# `data` is written as JSON by the backend (its line and its row): nesting deeper than any
# event's data (a trigger's samples: 4 maps and arrays) is refused before it can exhaust the
# stack.
MAX_DATA_DEPTH = 16


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
        schema = document["v"]
        if type(schema) is not int or schema != EVENT_SCHEMA:
            raise WireFormatError(f"unsupported event schema {shown(schema)}")
        data = document["data"]
        if not isinstance(data, dict):
            raise WireFormatError("event data must be a map")
        json_like(data, "data")
        privacy = privacy_field(document["prv"])
        if privacy is None:
            raise WireFormatError("event has no privacy field (prv)")
        return EventBody(
            vehicle=str(document["veh"]), boot=byte_string(document["boot"], "boot", 16),
            seq=integer(document["seq"], "seq", 0, UINT64_MAX),
            type=str(document["type"]), time_ms=time_ms(document["t"], "t"),
            clock=str(document["clk"]),
            config_version=integer(document["cfg"], "cfg", 0, UINT64_MAX),
            privacy=privacy, data=data,
            positions={str(k): (float(v[0]), float(v[1])) for k, v in document["pos"].items()})
    except WireFormatError:
        raise
    except Exception as exc:  # cbor2 and malformed documents raise several types
        raise WireFormatError(f"event body does not follow schema {EVENT_SCHEMA}: "
                              f"{type(exc).__name__}: {exc}") from exc


def json_like(value: Any, where: str, depth: int = 0) -> None:
    """Raise WireFormatError unless `value` is what JSON can hold, as the backend writes it:
    maps with text keys (JSON has no other, and json.dumps cannot sort mixed ones), arrays,
    text, booleans, null, floats and integers CBOR carries without a bignum tag, nested
    at most MAX_DATA_DEPTH maps and arrays deep, `data` itself included (docs/wire-format.md
    §4.8). `depth` is the number of maps and arrays around `value`."""
    if isinstance(value, dict | list) and depth >= MAX_DATA_DEPTH:
        raise WireFormatError(f"{where} is nested more than {MAX_DATA_DEPTH} deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireFormatError(f"{where} has a key that is not text: {shown(key)}")
            json_like(item, f"{where}.{key}"[:200], depth + 1)
    elif isinstance(value, list):
        for item in value:
            json_like(item, f"{where}[]"[:200], depth + 1)
    elif type(value) is int:
        integer(value, where)
    elif value is not None and type(value) not in (str, bool, float):
        raise WireFormatError(f"{where} holds a {type(value).__name__}, which JSON cannot")
