"""An independent decoder written from docs/wire-format.md, checked against what the agent seals.

The decoder below uses only cbor2, zstandard, cryptography and hashlib: it must not import
agent.wire.body, agent.wire.cose or agent.output.batch to decode (agent modules are used only
to *produce* batches). The test vectors marked `<!-- vector: NAME -->` in the document are
read from the document itself, so the document and the code cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import types
from pathlib import Path
from typing import Any

import can
import cbor2
import pytest
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"

# --- the independent reference decoder (from the spec only) ---------------------------------

CONTENT_TYPE = "application/vnd.edge-agent.batch+cbor+zstd"
MAX_BODY_BYTES = 64 * 1024 * 1024
REQUIRED_KEYS = ("v", "veh", "boot", "seq", "t0", "t1", "clk", "cfg", "dbc", "hlth", "did",
                 "tb", "sig")
COLUMNS_PER_KIND = {0: 1, 1: 1, 2: 4, 3: 4}
FLOAT_COLUMNS = {0: (), 1: (0,), 2: (), 3: (0, 1, 2)}


class SpecError(Exception):
    pass


def kid_of(public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    return hashlib.sha256(raw).digest()[:8]


def _cbor_head(major: int, argument: int) -> bytes:
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
    raise ValueError(argument)


def _bstr(data: bytes) -> bytes:
    return _cbor_head(2, len(data)) + data


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 section 4.4, written out byte by byte as the spec shows it."""
    return (b"\x84" + _cbor_head(3, 10) + b"Signature1" + _bstr(protected) + b"\x40"
            + _bstr(payload))


def open_envelope(envelope: bytes, keys: dict[bytes, Ed25519PublicKey]) -> tuple[bytes, bytes]:
    """Verify a COSE_Sign1 batch envelope; return (kid, zstd payload)."""
    item = cbor2.loads(envelope)
    if not isinstance(item, cbor2.CBORTag) or item.tag != 18:
        raise SpecError("not tagged COSE_Sign1")
    if not isinstance(item.value, list | tuple) or len(item.value) != 4:
        raise SpecError("COSE_Sign1 is not an array of 4")
    protected, unprotected, payload, signature = item.value
    if not (isinstance(protected, bytes) and isinstance(payload, bytes)
            and isinstance(signature, bytes) and hasattr(unprotected, "get")):
        raise SpecError("COSE_Sign1 item types")
    headers = cbor2.loads(protected)
    if headers.get(1) != -8:
        raise SpecError("alg is not EdDSA")
    if headers.get(3) != CONTENT_TYPE:
        raise SpecError("wrong content type")
    kid = unprotected.get(4)
    if not isinstance(kid, bytes) or len(kid) != 8:
        raise SpecError("no 8-byte kid")
    if kid not in keys:
        raise SpecError("unknown kid")
    if len(signature) != 64:
        raise SpecError("signature is not 64 bytes")
    try:
        keys[kid].verify(signature, sig_structure(protected, payload))
    except InvalidSignature as exc:
        raise SpecError("bad signature") from exc
    return kid, payload


def decompress(payload: bytes) -> bytes:
    declared = zstandard.get_frame_parameters(payload).content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > MAX_BODY_BYTES:
        raise SpecError("declared body size over the limit")
    reader = zstandard.ZstdDecompressor().decompressobj()
    body = reader.decompress(payload)
    if not reader.eof or reader.unused_data:
        raise SpecError("payload is not exactly one zstd frame")
    if len(body) > MAX_BODY_BYTES:
        raise SpecError("body over the limit")
    return body


def _skip(data: bytes, pos: int) -> int:
    """Offset just past the CBOR data item at `pos` (definite lengths only)."""
    major, info = data[pos] >> 5, data[pos] & 31
    pos += 1
    if info < 24:
        argument = info
    elif info <= 27:
        size = 1 << (info - 24)
        argument = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    else:
        raise SpecError("indefinite lengths are not used by the batch schemas")
    if major in (2, 3):
        return pos + argument
    if major == 4:
        for _ in range(argument):
            pos = _skip(data, pos)
    elif major == 5:
        for _ in range(2 * argument):
            pos = _skip(data, pos)
    elif major == 6:
        pos = _skip(data, pos)
    return pos


def raw_map_values(data: bytes) -> dict[Any, bytes]:
    """The encoded bytes of each value of the top-level map, by key."""
    if data[0] >> 5 != 5:
        raise SpecError("body is not a map")
    count = data[0] & 31
    pos = 1
    if count >= 24:
        size = 1 << (count - 24)
        count = int.from_bytes(data[1:1 + size], "big")
        pos += size
    values = {}
    for _ in range(count):
        key_end = _skip(data, pos)
        key = cbor2.loads(data[pos:key_end])
        value_end = _skip(data, key_end)
        values[key] = data[key_end:value_end]
        pos = value_end
    return values


def decode_varints(data: bytes) -> list[int]:
    values, previous, zigzag, shift = [], 0, 0, 0
    for byte in data:
        zigzag |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 63:
                raise SpecError("varint longer than 10 bytes")
            continue
        previous += zigzag >> 1 if zigzag % 2 == 0 else -(zigzag >> 1) - 1
        values.append(previous)
        zigzag, shift = 0, 0
    if shift:
        raise SpecError("varint column ends inside a number")
    return values


def decode_floats(data: bytes) -> list[float]:
    if len(data) % 8:
        raise SpecError("float column is not a multiple of 8 bytes")
    return list(struct.unpack(f"<{len(data) // 8}d", data))


def series_v2(sig: Any) -> list[list[Any]]:
    """Section 4.6: the five columns of `sig` as [signal, base, kind, column...] rows."""
    if not isinstance(sig, list) or len(sig) != 5 or not all(isinstance(c, bytes) for c in sig):
        raise SpecError("sig is not 5 byte strings")
    signals, bases, kinds, lengths = (decode_varints(column) for column in sig[:4])
    data = sig[4]
    if not len(signals) == len(bases) == len(kinds):
        raise SpecError("signals, bases and kinds differ in length")
    if any(n < 0 for n in signals + bases + lengths) or sum(lengths) != len(data):
        raise SpecError("bad indices or lengths")
    rows, next_length, position = [], 0, 0
    for signal, base, kind in zip(signals, bases, kinds, strict=True):
        if kind not in COLUMNS_PER_KIND:
            raise SpecError(f"series of signal {signal}: bad kind")
        row = [signal, base, kind]
        for length in lengths[next_length:next_length + COLUMNS_PER_KIND[kind]]:
            row.append(data[position:position + length])
            position += length
        next_length += COLUMNS_PER_KIND[kind]
        rows.append(row)
    if next_length != len(lengths):
        raise SpecError("lengths do not match the kinds")
    return rows


def decode_body(body: bytes) -> dict[str, Any]:
    """Walk a v1 or v2 body: the map with `tb` decoded and `series` by signal index."""
    document = cbor2.loads(body)
    if not isinstance(document, dict):
        raise SpecError("body is not a map")
    if document.get("v") not in (1, 2):
        raise SpecError(f"unsupported schema version {document.get('v')!r}")
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise SpecError(f"missing keys {missing}")
    for key, size in (("boot", 16), ("dbc", 32), ("did", 8)):
        if not isinstance(document[key], bytes) or len(document[key]) != size:
            raise SpecError(f"{key} is not {size} bytes")
    t0 = document["t0"]
    bases = [[t0 + t for t in decode_varints(base)] for base in document["tb"]]
    series = {}
    rows = series_v2(document["sig"]) if document["v"] == 2 else document["sig"]
    for entry in rows:
        signal, base, kind, *columns = entry
        if kind not in COLUMNS_PER_KIND or len(columns) != COLUMNS_PER_KIND[kind]:
            raise SpecError(f"series of signal {signal}: bad kind or column count")
        if not 0 <= base < len(bases):
            raise SpecError(f"series of signal {signal}: no time base {base}")
        if not 0 <= signal <= 65534 or signal in series:
            raise SpecError(f"signal {signal} out of range or repeated")
        times = bases[base]
        decoded = [decode_floats(c) if i in FLOAT_COLUMNS[kind] else decode_varints(c)
                   for i, c in enumerate(columns)]
        if any(len(column) != len(times) for column in decoded):
            raise SpecError(f"series of signal {signal}: column length")
        series[signal] = {"kind": kind, "times": times, "columns": decoded}
    result = {key: document[key] for key in REQUIRED_KEYS if key not in ("tb", "sig")}
    result["series"] = series
    result["dict"] = None
    if "dict" in document:
        raw_dict = raw_map_values(body)["dict"]
        if hashlib.sha256(raw_dict).digest()[:8] != document["did"]:
            raise SpecError("did is not the hash of the dictionary")
        if any(len(entry) != 7 for entry in document["dict"]):
            raise SpecError("dictionary entries have 7 items")
        if any(signal >= len(document["dict"]) for signal in series):
            raise SpecError("a series names a signal beyond the dictionary")
        result["dict"] = document["dict"]
    return result


def physical(entry: list[Any], raw: int | float) -> int | float:
    _key, _unit, scale, offset, *_ = entry
    return raw * scale + offset


def label(entry: list[Any], raw: int | float) -> str | None:
    choices = entry[6]
    return choices.get(int(raw)) if choices else None


# --- the document's test vectors --------------------------------------------------------------

def doc_vectors() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- vector: ([\w-]+) -->\s*```text\n(.*?)```", text, re.S))


def doc_bytes(name: str) -> bytes:
    return bytes.fromhex(doc_vectors()[name])


def test_doc_varint_vectors_match_the_code_and_the_decoder():
    from agent.wire.body import encode_varints  # production side only

    lines = [line for line in doc_vectors()["varints"].splitlines() if line.strip()]
    assert len(lines) >= 5
    for line in lines:
        values_text, hex_text = line.split("->")
        values = [int(v) for v in re.findall(r"-?\d+", values_text)]
        expected = bytes.fromhex(hex_text)
        assert encode_varints(values) == expected, line
        assert decode_varints(expected) == values, line


def test_truncated_varint_is_rejected():
    with pytest.raises(SpecError):
        decode_varints(b"\xf2\xc0")


def doc_bounds() -> dict[str, tuple[int, ...]]:
    """§4.8's bounds vector: name -> its numbers."""
    return {name: tuple(map(int, numbers)) for name, *numbers in
            (line.split() for line in doc_vectors()["bounds"].splitlines() if line.strip())}


def test_doc_bounds_are_the_codes():
    """The reference decoder (production side) refuses the first value past each documented
    bound and takes the bound itself."""
    from agent.errors import WireFormatError  # production side only
    from agent.events.codec import MAX_DATA_DEPTH
    from agent.wire.body import decode_body as production_decode

    bounds = doc_bounds()
    assert bounds["integer"] == (-(2**64), 2**64 - 1)
    assert bounds["data_depth"] == (MAX_DATA_DEPTH,)
    document = cbor2.loads(doc_bytes("body"))
    for key, (low, high) in [("t0", bounds["time_ms"]), ("t1", bounds["time_ms"]),
                             ("seq", bounds["uint64"]), ("cfg", bounds["uint64"])]:
        for value in (low, high):
            production_decode(cbor2.dumps({**document, key: value}))
        for value in (low - 1, high + 1):
            with pytest.raises(WireFormatError, match=key):
                production_decode(cbor2.dumps({**document, key: value}))


def doc_public_key() -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(doc_bytes("public-key"))


T0 = 1_700_000_000_000


def test_doc_envelope_verifies_and_decodes_to_the_doc_body():
    public_key = doc_public_key()
    kid = kid_of(public_key)
    assert kid.hex() == "56475aa75463474c"
    envelope = doc_bytes("envelope")
    assert cbor2.loads(envelope).value[0] == doc_bytes("protected")
    got_kid, payload = open_envelope(envelope, {kid: public_key})
    assert got_kid == kid
    body = decompress(payload)
    assert body == doc_bytes("body")
    batch = decode_body(body)
    assert (batch["veh"], batch["boot"], batch["seq"], batch["t0"], batch["t1"], batch["clk"],
            batch["cfg"]) == ("demo-0001", bytes(range(16)), 0, T0, T0 + 3000, "ntp", 1)
    assert batch["hlth"] == {"can0.frames": 42, "ring.lost": 0}
    speed, torque = batch["series"][0], batch["series"][1]
    assert speed == {"kind": 0, "times": [T0 + 1000, T0 + 2000], "columns": [[12345, 12400]]}
    assert torque == {"kind": 3, "times": [T0 + 1000, T0 + 2000],
                      "columns": [[-1.5, 0.25], [2.5, 0.75], [4.0, 1.0], [5, 2]]}
    dictionary = batch["dict"]
    assert [entry[0] for entry in dictionary] == ["can0.Engine.Speed", "can0.Motor.Torque"]
    assert [physical(dictionary[0], raw) for raw in speed["columns"][0]] == [123.45, 124.0]


def test_tampered_or_foreign_envelopes_are_rejected():
    public_key = doc_public_key()
    keys = {kid_of(public_key): public_key}
    protected, unprotected, payload, signature = cbor2.loads(doc_bytes("envelope")).value
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(SpecError, match="bad signature"):
        open_envelope(cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected), tampered,
                                                     signature])), keys)
    with pytest.raises(SpecError, match="unknown kid"):
        other = Ed25519PrivateKey.generate().public_key()
        open_envelope(doc_bytes("envelope"), {kid_of(other): other})
    with pytest.raises(SpecError, match="not tagged"):
        open_envelope(cbor2.dumps([protected, dict(unprotected), payload, signature]), keys)
    with pytest.raises(SpecError, match="exactly one zstd frame"):
        decompress(payload + b"\x00")


# --- producing batches with the agent ---------------------------------------------------------

GPS_DBC = """VERSION ""

NS_ :

BS_:

BU_: GPS

BO_ 1280 Fix: 8 GPS
 SG_ Lat : 0|64@1- (1,0) [-90|90] "deg" Vector__XXX

SIG_VALTYPE_ 1280 Lat : 2;
"""


def make_batcher(tmp_path, rules, *, with_gps=False, dictionary_every=60, seed=bytes(range(32)),
                 schema=2):
    from agent.config.schema import SamplingConfig
    from agent.decoding.dbc import combined_digest, load_dbc
    from agent.output.batch import CONTENT_TYPE as AGENT_CONTENT_TYPE
    from agent.output.batch import Batcher, BatchIdentity
    from agent.sampling.plan import build_plan
    from agent.sampling.ring import Ring
    from agent.wire.cose import Signer
    from tests.helpers.dbc_fixtures import write_small_dbc

    files = {"can0": write_small_dbc(tmp_path)}
    if with_gps:
        files["gps"] = tmp_path / "gps.dbc"
        files["gps"].write_text(GPS_DBC, encoding="utf-8")
    loaded = {name: load_dbc([path]) for name, path in files.items()}
    plan = build_plan(SamplingConfig(stale_after=2.0, signals=tuple(rules)),
                      {name: dbc.database for name, dbc in loaded.items()})
    ring = Ring(10_000, frozenset(s.index for s in plan.signals if s.is_float))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    identity = BatchIdentity(vehicle="demo-0001", boot=bytes(range(16)), config_version=1,
                             dbc_digest=combined_digest([d.digest for d in loaded.values()]),
                             clock=lambda: "ntp")
    batcher = Batcher(plan, ring, identity, Signer(key, AGENT_CONTENT_TYPE),
                      lambda: {"can0.frames": 42}, dictionary_every=dictionary_every,
                      schema=schema)
    keys = {kid_of(key.public_key()): key.public_key()}
    return plan, ring, batcher, keys, files, loaded


def open_batch(envelope: bytes, keys: dict[bytes, Ed25519PublicKey]) -> dict[str, Any]:
    return decode_body(decompress(open_envelope(envelope, keys)[1]))


@pytest.mark.parametrize("schema, vector", [(2, "body"), (1, "body-v1")])
def test_the_code_still_produces_the_doc_example(tmp_path, schema, vector):
    from agent.config.schema import SignalRule
    from agent.sampling.ring import Field

    plan, ring, batcher, keys, *_ = make_batcher(tmp_path, (
        SignalRule("can0.Engine.Speed"), SignalRule("can0.Motor.Torque", mode="stats")),
        schema=schema)
    assert [s.key for s in plan.signals] == ["can0.Engine.Speed", "can0.Motor.Torque"]
    for t, raw in [(T0 + 1000, 12345), (T0 + 2000, 12400)]:
        ring.append(t, 0, Field.VALUE, raw)
    for t, stats in [(T0 + 1000, (-1.5, 2.5, 4.0, 5)), (T0 + 2000, (0.25, 0.75, 1.0, 2))]:
        for field, value in zip((Field.MIN, Field.MAX, Field.SUM, Field.COUNT), stats,
                                strict=True):
            ring.append(t, 1, field, value)
    envelope = batcher.seal(T0, T0 + 3000).envelope
    assert list(keys) == [kid_of(doc_public_key())]
    protected, unprotected, payload, _ = cbor2.loads(envelope).value
    assert protected == doc_bytes("protected")
    assert dict(unprotected) == {4: kid_of(doc_public_key())}
    assert zstandard.get_frame_parameters(payload).content_size == len(doc_bytes(vector))
    kid, payload = open_envelope(envelope, keys)
    assert decompress(payload) == doc_bytes(vector)


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


def test_sealed_batch_decodes_to_the_records_that_went_in(tmp_path):
    from agent.config.schema import SignalRule
    from agent.sampling.ring import Field

    plan, ring, batcher, keys, files, loaded = make_batcher(tmp_path, (
        SignalRule("can0.Engine.*"), SignalRule("can0.Chassis.Odo", mode="stats"),
        SignalRule("can0.Motor.Torque", mode="stats"), SignalRule("gps.*")), with_gps=True)
    index = {s.key: s.index for s in plan.signals}
    t0 = 1_700_000_060_000
    last = {
        "can0.Engine.Speed": ([t0, t0 + 1000, t0 + 2000], [0, 65535, 12000]),
        "can0.Engine.Temp": ([t0 + 1000, t0 + 2000], [-5, 87]),
        "can0.Engine.Gear": ([t0, t0 + 1000], [3, 0]),
        "gps.Fix.Lat": ([t0, t0 + 1000, t0 + 2000], [48.137154, -0.0, 1e308]),
    }
    stats = {
        "can0.Chassis.Odo": ([t0 - 1000, t0 + 1000],
                             [(100, 200, 900, 6), (16777215, 16777215, 3 * 16777215, 3)]),
        "can0.Motor.Torque": ([t0 - 1000, t0, t0 + 1000],
                              [(-1000.0, 1000.0, 0.0, 7), (-0.0, math.inf, math.inf, 1),
                               (1e-300, 2.5, 3.5, 2)]),
    }
    for key, (times, values) in last.items():
        for t, value in zip(times, values, strict=True):
            ring.append(t, index[key], Field.VALUE, value)
    for key, (times, groups) in stats.items():
        for t, group in zip(times, groups, strict=True):
            for field, value in zip((Field.MIN, Field.MAX, Field.SUM, Field.COUNT), group,
                                    strict=True):
                ring.append(t, index[key], field, value)
    batch = open_batch(batcher.seal(t0, t0 + 60_000).envelope, keys)

    def source_digest(path: Path) -> bytes:
        return hashlib.sha256(hashlib.sha256(path.read_bytes()).digest()).digest()

    assert batch["dbc"] == hashlib.sha256(
        source_digest(files["can0"]) + source_digest(files["gps"])).digest()
    assert (batch["seq"], batch["t0"], batch["t1"]) == (0, t0, t0 + 60_000)
    assert set(batch["series"]) == set(index.values())
    expected_kind = {"can0.Engine.Speed": 0, "can0.Engine.Temp": 0, "can0.Engine.Gear": 0,
                     "gps.Fix.Lat": 1, "can0.Chassis.Odo": 2, "can0.Motor.Torque": 3}
    for key, kind in expected_kind.items():
        series = batch["series"][index[key]]
        assert series["kind"] == kind, key
        if kind in (0, 1):
            times, values = last[key]
            columns = [values]
        else:
            times, groups = stats[key]
            columns = [list(column) for column in zip(*groups, strict=True)]
        assert series["times"] == times, key
        for position, (got, want) in enumerate(zip(series["columns"], columns, strict=True)):
            if position in FLOAT_COLUMNS[kind]:
                assert [bits(v) for v in got] == [bits(v) for v in want], key
            else:
                assert got == want, key

    # The dictionary turns raw values into exactly what cantools gives.
    dictionary = batch["dict"]
    assert [entry[0] for entry in dictionary] == [s.key for s in plan.signals]
    engine = loaded["can0"].database.get_message_by_name("Engine")
    raws = {"Speed": 12000, "Temp": -5, "Gear": 3}
    data = engine.encode(raws, scaling=False)
    numbers = engine.decode(data, decode_choices=False)
    named = engine.decode(data)
    for name, raw in raws.items():
        entry = dictionary[index[f"can0.Engine.{name}"]]
        assert physical(entry, raw) == numbers[name], name
        assert label(entry, raw) == (named[name].name if entry[6] else None), name
    assert label(dictionary[index["can0.Engine.Gear"]], 3) == "D"
    assert dictionary[index["can0.Engine.Temp"]][1:6] == ["degC", 1, -40, "i", "last"]
    assert dictionary[index["gps.Fix.Lat"]][4] == "f"
    odo = batch["series"][index["can0.Chassis.Odo"]]["columns"]
    assert physical(dictionary[index["can0.Chassis.Odo"]], odo[2][0] / odo[3][0]) == 150.0


def test_dictionary_travels_every_nth_batch_under_a_stable_id(tmp_path):
    from agent.config.schema import SignalRule

    _, _, batcher, keys, *_ = make_batcher(tmp_path, (SignalRule("can0.Engine.*"),),
                                           dictionary_every=3)
    batches = [open_batch(batcher.seal(T0 + i, T0 + i + 1).envelope, keys) for i in range(4)]
    assert [b["seq"] for b in batches] == [0, 1, 2, 3]
    assert [b["dict"] is not None for b in batches] == [True, False, False, True]
    assert len({b["did"] for b in batches}) == 1
    assert all(b["series"] == {} for b in batches)


def test_sampling_semantics_end_to_end(tmp_path):
    """Frames in, batch out: `last` is the newest value strictly before T (if not stale);
    stats labelled T cover [T, T + P); a window holds what its ticks emitted."""
    from agent.config.schema import SignalRule
    from agent.decoding.frames import FrameStore
    from agent.sampling.sampler import Sampler
    from agent.sources.health import SourceHealth

    plan, ring, batcher, keys, _, loaded = make_batcher(tmp_path, (
        SignalRule("can0.Engine.Speed"), SignalRule("can0.Motor.Torque", mode="stats")))
    database = loaded["can0"].database
    store = FrameStore(database, plan.for_source("can0"), SourceHealth())
    envelopes = []
    sampler = Sampler(plan, ring, {"can0": store}, 5000,
                      lambda t0, t1: envelopes.append(batcher.seal(t0, t1).envelope))
    engine, motor = database.get_message_by_name("Engine"), database.get_message_by_name("Motor")
    base = 1_700_000_000
    speeds = [(0.2, 100), (0.9, 200), (1.0, 300), (1.5, 400), (4.6, 500), (5.0, 600)]
    torques = [(0.5, 1.5), (0.75, -2.25), (1.0, 4.0), (2.5, 0.5)]
    frames = sorted([(t, engine, {"Speed": v, "Temp": 0, "Gear": 0}) for t, v in speeds]
                    + [(t, motor, {"Torque": v}) for t, v in torques], key=lambda f: f[0])
    for offset, message, values in frames:
        timestamp = base + offset
        sampler.advance(timestamp)
        store.accept(can.Message(arbitration_id=message.frame_id, timestamp=timestamp,
                                 is_extended_id=False, data=message.encode(values, scaling=False)))
    assert len(envelopes) == 1
    batch = open_batch(envelopes[0], keys)
    t0 = base * 1000
    assert (batch["t0"], batch["t1"]) == (t0, t0 + 5000)
    # Expected values, computed from the rules in docs/wire-format.md section 7.
    ticks = [t0 + 1000 * k for k in range(1, 5)]  # first tick at or after the start (t0+200)
    expected_last = []
    for tick in ticks:
        before = [(t0 + round(o * 1000), v) for o, v in speeds if t0 + round(o * 1000) < tick]
        if before and tick - before[-1][0] <= 2000:
            expected_last.append((tick, before[-1][1]))
    expected_stats = []
    for label_ms in range(t0, t0 + 5000, 1000):
        inside = [v for o, v in torques if label_ms <= t0 + round(o * 1000) < label_ms + 1000]
        if inside:
            expected_stats.append((label_ms, min(inside), max(inside), sum(inside),
                                   len(inside)))
    speed = batch["series"][0]
    assert list(zip(speed["times"], speed["columns"][0], strict=True)) == expected_last
    assert expected_last == [(t0 + 1000, 200), (t0 + 2000, 400), (t0 + 3000, 400)]
    torque = batch["series"][1]
    assert list(zip(torque["times"], *torque["columns"], strict=True)) == expected_stats
    assert [s[0] - t0 for s in expected_stats] == [0, 1000, 2000]


def test_both_doc_bodies_decode_to_the_same_series():
    v1, v2 = decode_body(doc_bytes("body-v1")), decode_body(doc_bytes("body"))
    assert (v1["v"], v2["v"]) == (1, 2)
    assert v1["series"] == v2["series"] and len(v2["series"]) == 2
    assert {key: value for key, value in v1.items() if key != "v"} == {
        key: value for key, value in v2.items() if key != "v"}


@pytest.mark.parametrize("change", [
    lambda sig: sig[:4],
    lambda sig: [*sig[:3], sig[3][:-1], sig[4]],
    lambda sig: [*sig[:4], sig[4][:-1]],
    lambda sig: [sig[0], bytes([0, 4]), *sig[2:]],
    lambda sig: [sig[0], sig[1], bytes([0, 8]), *sig[3:]],
    lambda sig: [bytes([0, 0]), *sig[1:]],
    lambda sig: [bytes([0, 0x80 | 0x7E, 0x80 | 0x7F, 0x07]), *sig[1:]],
    lambda sig: [bytes([0, 4]), *sig[1:]],
    lambda sig: [*sig[:3], b"\xff" * 10 + b"\x00", sig[4]],
])
def test_malformed_v2_series_are_rejected(change):
    document = cbor2.loads(doc_bytes("body"))
    document["sig"] = change(document["sig"])
    with pytest.raises(SpecError):
        decode_body(cbor2.dumps(document))


def test_unknown_keys_are_ignored_and_unknown_versions_rejected():
    document = cbor2.loads(doc_bytes("body"))
    assert decode_body(cbor2.dumps({**document, "future": [1, 2]}))["seq"] == 0
    for version in (3, 0, None):
        changed = {**document, "v": version}
        with pytest.raises(SpecError, match="schema version"):
            decode_body(cbor2.dumps(changed))


def test_topics_status_payload_and_health_names_match_the_doc():
    from agent.output.uplink import Uplink, UplinkStats, topic
    from agent.sources.health import SourceHealth

    text = DOC.read_text(encoding="utf-8")
    assert topic("fleet", "demo-0001", "telemetry") == "fleet/demo-0001/telemetry"
    stand_in = types.SimpleNamespace(_boot=bytes(range(16)).hex())
    online = Uplink._status_payload(stand_in, "online")  # type: ignore[arg-type]
    assert online.decode() in text
    gpsd_source = SourceHealth(state={"connected": 1, "stale": 0, "fix_mode": 3})  # gauges
    assert set(re.findall(r"`\{source\}\.(\w+)`", text)) == set(gpsd_source.counters())
    idle = UplinkStats(connected=False, published=0, acked=0, dropped=0, connects=0,
                       connect_failures=0, refused=0, last_puback=0.0)
    assert set(re.findall(r"`uplink\.(\w+)`", text)) == set(idle.counters())


DICTIONARY_CONTENT_TYPE = "application/vnd.edge-agent.dictionary+cbor+zstd"


def test_doc_dictionary_document_names_its_own_id_and_matches_the_example_batch():
    """§4.9 read from the document alone: the raw `dict` item hashes to `did`, which is the
    example batch's, and its entries are the batch's."""
    document = doc_bytes("dictionary-document")
    raw = raw_map_values(document)
    assert cbor2.loads(raw["v"]) == 1
    did = cbor2.loads(raw["did"])
    assert hashlib.sha256(raw["dict"]).digest()[:8] == did
    batch = decode_body(doc_bytes("body"))
    assert did == batch["did"] and cbor2.loads(raw["dict"]) == batch["dict"]
    protected = cbor2.loads(doc_bytes("dictionary-protected"))
    assert protected == {1: -8, 3: DICTIONARY_CONTENT_TYPE}


def test_the_code_publishes_the_doc_dictionary_document_signed(tmp_path):
    from agent.config.schema import SignalRule
    from agent.wire.dictionary import dictionary_leaf

    _, _, batcher, keys, *_ = make_batcher(tmp_path, (
        SignalRule("can0.Engine.Speed"), SignalRule("can0.Motor.Torque", mode="stats")))
    envelope = batcher.dictionary_envelope()
    protected, unprotected, payload, signature = cbor2.loads(envelope).value
    assert protected == doc_bytes("dictionary-protected")
    kid = unprotected[4]
    keys[kid].verify(signature, sig_structure(protected, payload))
    assert decompress(payload) == doc_bytes("dictionary-document")
    assert dictionary_leaf(batcher.dictionary_id) == "dictionary/1d696d192ccad35d"
    assert "`{prefix}/{vehicle}/dictionary/{did}`" in DOC.read_text(encoding="utf-8")


def test_the_code_produces_the_doc_frame_time_example(tmp_path):
    """§7.1: `change` and `bounded` samples at their frames' times, through the agent's own
    frame-time sampler and batcher, give the document's body; read back by the document's
    rules (hold for change, lines for bounded) they give every frame's value (within ε)."""
    from agent.config.schema import SignalRule
    from agent.sampling.frame_time import FrameTimeSampler

    plan, ring, batcher, keys, *_ = make_batcher(tmp_path, (
        SignalRule("can0.Engine.Gear", mode="change"),
        SignalRule("can0.Engine.Temp", mode="bounded", epsilon=1.0)))
    assert [(s.key, s.mode) for s in plan.signals] == [("can0.Engine.Temp", "bounded"),
                                                        ("can0.Engine.Gear", "change")]
    sampler = FrameTimeSampler(plan, ring)
    temp = [(100, 60), (600, 62), (1100, 64), (1600, 66), (2100, 65)]
    gear = [(100, 0), (600, 0), (1100, 0), (1250, 3), (1600, 3), (2010, 3), (2100, 3)]
    for t, raw in sorted([(t, (0, raw)) for t, raw in temp] + [(t, (1, raw)) for t, raw in gear]):
        sampler.observe(raw[0], T0 + t, raw[1])
    sampler.flush()
    envelope = batcher.seal(T0, T0 + 3000).envelope
    assert decompress(open_envelope(envelope, keys)[1]) == doc_bytes("body-frame-time")

    body = decode_body(doc_bytes("body-frame-time"))
    assert [entry[5] for entry in body["dict"]] == ["bounded", "change"]
    gear_series, temp_series = body["series"][1], body["series"][0]
    assert gear_series["times"] == [T0 + 100, T0 + 1250]
    assert [label(body["dict"][1], raw) for raw in gear_series["columns"][0]] == ["P", "D"]
    for t, raw in gear:  # hold: the newest sample at or before the frame
        held = [v for at, v in zip(gear_series["times"], gear_series["columns"][0], strict=True)
                if at <= T0 + t][-1]
        assert held == raw
    times = temp_series["times"]
    values = [physical(body["dict"][0], raw) for raw in temp_series["columns"][0]]
    assert values == [20, 26, 25]
    for t, raw in temp:  # lines between the points, within ε = 1 degC of every frame
        at = T0 + t
        i = max(n for n, point in enumerate(times) if point <= at)
        line = values[i] if times[i] == at else values[i] + (values[i + 1] - values[i]) * (
            (at - times[i]) / (times[i + 1] - times[i]))
        assert abs(line - physical(body["dict"][0], raw)) <= 1.0
