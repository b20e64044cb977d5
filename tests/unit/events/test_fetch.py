"""Fetch on demand on the vehicle: the request check (signature shared with OTA, target,
expiry, replay), its memory across restarts, the event it makes, and the consent filter the
event goes through."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.schema import LocationConfig, PrivacyConfig
from agent.events.fetch import (
    CONTENT_TYPE,
    DOCUMENT_TYPE,
    MAX_SAMPLES,
    MAX_VALIDITY_S,
    FetchHandler,
    FetchMemory,
    FetchRejected,
    FetchSource,
    Reason,
    check_fetch,
    fetch_event,
    parse_document,
    sign_fetch,
)
from agent.events.model import Event
from agent.events.sink import EventCounters, EventIdentity, EventSink
from agent.ota.update import CONTENT_TYPE as CONFIG_CONTENT_TYPE
from agent.ota.update import Trust
from agent.output.spool import Spool
from agent.privacy.consent import Classifier, Consent
from agent.privacy.location import LocationPolicy
from agent.wire.cose import Signer, verify
from agent.wire.keys import generate_key_pair, key_id, load_private_key
from tests.helpers.documents import ANY_DOCUMENT

NOW = 1_800_000_000
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
TRUST = Trust(keys={key_id(PUBLIC): PUBLIC}, vehicle="car-1", groups=frozenset({"eu-west"}),
              max_bytes=1_000_000)
CELLS = "can0.BMS_CellStats.MaxCellVoltage"
SPEED = "can0.ESP_VehicleSpeed.VehicleSpeed"  # `driving`


def request(*, vehicle: str = "car-1", key: Ed25519PrivateKey = KEY, expires_in: int = 300,
            request_id: bytes | None = None, content_type: str = CONTENT_TYPE,
            **span: int) -> bytes:
    return sign_fetch(Signer(key, content_type), vehicle=vehicle, signals=["can0.*"],
                      issued_at=NOW, expires_at=NOW + expires_in, request_id=request_id,
                      **(span or {"last_ms": 60_000}))


def reason(envelope: bytes, memory: FetchMemory, now: float = NOW) -> Reason:
    with pytest.raises(FetchRejected) as caught:
        check_fetch(envelope, TRUST, memory, now=now)
    return caught.value.reason


@pytest.fixture
def memory(tmp_path: Path) -> FetchMemory:
    return FetchMemory(tmp_path)


def test_a_good_request_passes_once_and_is_a_replay_after(memory):
    envelope = request(request_id=b"r" * 16)
    accepted = check_fetch(envelope, TRUST, memory, now=NOW)
    assert (accepted.id, accepted.vehicle, accepted.signals, accepted.last_ms) == (
        b"r" * 16, "car-1", ("can0.*",), 60_000)
    assert reason(envelope, memory) is Reason.REPLAYED
    # A new id for the same content is a new request.
    assert check_fetch(request(), TRUST, memory, now=NOW).id != b"r" * 16


def test_each_check_refuses_with_its_reason(memory):
    good = request()
    cases = {
        Reason.MALFORMED: b"\xa0",
        Reason.UNKNOWN_KEY: request(key=Ed25519PrivateKey.generate()),
        Reason.BAD_SIGNATURE: good[:-8] + bytes(8),
        # A config update is not a fetch request, though the same key signed it.
        Reason.BAD_DOCUMENT: request(content_type=CONFIG_CONTENT_TYPE),
        Reason.WRONG_TARGET: request(vehicle="car-2"),
        Reason.TOO_LARGE: good + bytes(20_000),
    }
    for expected, envelope in cases.items():
        assert reason(envelope, memory) is expected, expected
    assert reason(request(expires_in=60), memory, now=NOW + 60) is Reason.EXPIRED
    assert len(memory) == 0  # nothing refused is remembered


@pytest.mark.parametrize("document", [
    {"id": b"x" * 15},                                          # id not 16 bytes
    {"signals": []}, {"signals": [1]}, {"signals": "can0.*"},
    {"target": {"group": "eu-west"}},                           # one vehicle only
    {"expires_at": NOW + MAX_VALIDITY_S + 1},                   # valid too long to remember
    {"expires_at": NOW},                                        # not after issued_at
    {"last_ms": 0}, {"last_ms": -5}, {"last_ms": True},
    {"from_ms": 10, "to_ms": 20},                               # both kinds of range
    {"last_ms": None, "from_ms": 20, "to_ms": 10},              # backwards
    {"max_samples": 0}, {"max_samples": 10**9},
    {"issued_at": 2**63},
])
def test_malformed_fields_are_a_bad_document(memory, document):
    base = {"type": DOCUMENT_TYPE, "id": b"i" * 16, "issued_at": NOW,
            "expires_at": NOW + 300, "target": {"vehicle": "car-1"}, "signals": ["can0.*"],
            "last_ms": 1000}
    fields = {**base, **document}
    envelope = Signer(KEY, CONTENT_TYPE).sign(cbor2.dumps(
        {k: v for k, v in fields.items() if v is not None}))
    assert reason(envelope, memory) is Reason.BAD_DOCUMENT


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(memory, data):
    assert reason(data, memory) in (Reason.MALFORMED, Reason.UNKNOWN_KEY,
                                    Reason.BAD_SIGNATURE, Reason.TOO_LARGE)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=ANY_DOCUMENT)
def test_signed_documents_of_any_shape_are_refused_cleanly(memory, document):
    """Even a trusted key signing nonsense cannot crash the vehicle."""
    envelope = Signer(KEY, CONTENT_TYPE).sign(cbor2.dumps(document))
    assert reason(envelope, memory) is Reason.BAD_DOCUMENT


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_refused(memory, position, flip):
    envelope = bytearray(request())
    envelope[position % len(envelope)] ^= flip
    with pytest.raises(FetchRejected):
        check_fetch(bytes(envelope), TRUST, memory, now=NOW)


def test_ids_are_remembered_across_restarts_until_their_request_expires(tmp_path):
    envelope = request(request_id=b"a" * 16, expires_in=100)
    check_fetch(envelope, TRUST, FetchMemory(tmp_path), now=NOW)
    stored = json.loads((tmp_path / "ota" / "fetch-seen.json").read_text())
    assert stored == {("a" * 16).encode().hex(): NOW + 100}
    assert reason(envelope, FetchMemory(tmp_path)) is Reason.REPLAYED
    # Once expired the id is forgotten (the expiry check refuses the envelope anyway).
    later = FetchMemory(tmp_path)
    check_fetch(request(expires_in=300), TRUST, later, now=NOW + 150)
    assert ("a" * 16).encode().hex() not in json.loads(
        (tmp_path / "ota" / "fetch-seen.json").read_text())


def test_memory_is_bounded_and_refuses_rather_than_forgets(tmp_path):
    memory = FetchMemory(tmp_path, limit=3)
    for _ in range(3):
        check_fetch(request(expires_in=100), TRUST, memory, now=NOW)
    assert reason(request(), memory) is Reason.BUSY
    assert len(memory) == 3
    check_fetch(request(), TRUST, memory, now=NOW + 101)  # the first three expired
    assert len(memory) == 1


def test_a_damaged_memory_file_does_not_stop_requests(tmp_path):
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "fetch-seen.json").write_text("{not json")
    assert check_fetch(request(), TRUST, FetchMemory(tmp_path), now=NOW)


def source(samples: dict[str, list[tuple[int, float]]], emitted: list[Event],
           newest_ms: int | None = 10_000) -> FetchSource:
    def capture(keys, from_ms, to_ms):
        return {k: [(t, v) for t, v in samples[k] if from_ms <= t <= to_ms]
                for k in keys if k in samples}
    return FetchSource(tuple(samples), newest_ms, capture, emitted.append)


def test_the_event_holds_the_matching_signals_in_the_range_newest_first_when_capped(memory):
    samples = {CELLS: [(t, 3700.0) for t in range(0, 10_001, 1000)],
               SPEED: [(t, 50.0) for t in range(0, 10_001, 500)],
               "can0.Other.X": [(5000, 1.0)]}
    accepted = check_fetch(sign_fetch(Signer(KEY, CONTENT_TYPE), vehicle="car-1",
                                      signals=["can0.BMS_*", SPEED], issued_at=NOW,
                                      expires_at=NOW + 60, last_ms=3000, max_samples=5),
                           TRUST, memory, now=NOW)
    event = fetch_event(accepted, source(samples, []), now_ms=99)
    assert (event.type, event.time_ms, event.privacy_class) == ("fetch", 99, "technical")
    data = event.data
    assert (data["from_ms"], data["to_ms"]) == (7000, 10_000)  # relative to the newest sample
    assert data["total"] == 4 + 7 and data["truncated"] is True
    kept = [(t, k) for k, rows in data["samples"].items() for t, _ in rows]
    assert len(kept) == 5 and min(t for t, _ in kept) >= 8500  # the newest five
    assert "can0.Other.X" not in data["samples"]


def test_the_sink_withholds_what_the_consent_does_not_allow(tmp_path):
    """The fetch event goes through the event sink: at vehicle-health the speed (driving)
    stays on the vehicle, the cell voltages (technical) go."""
    generate_key_pair(tmp_path / "vehicle.key")
    spooled = []
    sink = EventSink(Consent("vehicle-health", 1, "config"),
                     Classifier(PrivacyConfig(location=LocationConfig())),
                     LocationPolicy(LocationConfig(), ()),
                     EventIdentity(b"b" * 16, 1, lambda t: "car-1", lambda: "ntp"),
                     Signer(load_private_key(tmp_path / "vehicle.key"), "x"),
                     Spool(tmp_path / "s.sqlite", 1 << 20), spooled.append, EventCounters(),
                     lambda: 0)
    accepted = check_fetch(sign_fetch(Signer(KEY, CONTENT_TYPE), vehicle="car-1",
                                      signals=["can0.*"], issued_at=NOW, expires_at=NOW + 60,
                                      last_ms=60_000), TRUST, FetchMemory(tmp_path), now=NOW)
    event = fetch_event(accepted, source({CELLS: [(9000, 3700.0)], SPEED: [(9000, 50.0)]}, []),
                        now_ms=9500)
    assert set(event.data["samples"]) == {CELLS, SPEED}
    body = sink.filtered(event)
    assert body is not None and body.type == "fetch"
    assert body.data["samples"] == {CELLS: [[9000, 3700.0]]}
    sink(event)
    assert len(spooled) == 1


def test_the_handler_acks_counts_and_never_raises(tmp_path):
    acks: list[tuple[str, dict]] = []
    emitted: list[Event] = []
    handler = FetchHandler(lambda: TRUST, FetchMemory(tmp_path),
                           lambda work: work(source({CELLS: [(9000, 1.0)]}, emitted)),
                           lambda leaf, payload: acks.append((leaf, json.loads(payload))))
    def live(vehicle: str) -> bytes:  # the handler checks against the wall clock
        return sign_fetch(Signer(KEY, CONTENT_TYPE), vehicle=vehicle, signals=[CELLS],
                          expires_at=int(time.time()) + 60, last_ms=1000)

    good = live("car-1")
    for envelope in (good, good, b"", b"\x00" * 10, live("car-2")):
        handler.handle(envelope)
    assert [leaf for leaf, _ in acks] == ["fetch/ack"] * 5
    assert [(a["outcome"], a["reason"]) for _, a in acks] == [
        ("accepted", None), ("rejected", "replayed"), ("rejected", "malformed"),
        ("rejected", "malformed"), ("rejected", "wrong-target")]
    assert handler.counters.snapshot() == {
        "accepted": 1, "rejected": {"replayed": 1, "malformed": 2, "wrong-target": 1}}
    assert len(emitted) == 1 and emitted[0].data["samples"] == {CELLS: [[9000, 1.0]]}
    disabled = FetchHandler(lambda: None, FetchMemory(tmp_path), lambda work: None,
                            lambda leaf, payload: acks.append((leaf, json.loads(payload))))
    disabled.handle(good)
    assert acks[-1][1]["reason"] == "disabled"


def test_the_doc_vector_is_what_sign_fetch_signs_and_it_parses():
    text = (Path(__file__).resolve().parents[3] / "docs" / "fetch.md").read_text()
    vector = re.search(r"<!-- vector: fetch-request -->\s*```text\n(.*?)```", text, re.S)
    assert vector is not None
    body = bytes.fromhex("".join(vector.group(1).split()))
    envelope = sign_fetch(Signer(KEY, CONTENT_TYPE), vehicle="demo-0001",
                          signals=["can0.BMS_CellStats.*"], request_id=bytes(range(16)),
                          issued_at=1767225600, expires_at=1767225900, last_ms=60_000)
    assert verify(envelope, TRUST.keys).payload == body
    parsed = parse_document(body, b"kid")
    assert (parsed.id, parsed.vehicle, parsed.signals, parsed.last_ms, parsed.max_samples) == (
        bytes(range(16)), "demo-0001", ("can0.BMS_CellStats.*",), 60_000, MAX_SAMPLES)
    assert f"CBOR, {len(body)} bytes" in text


def test_the_consent_keeps_withheld_signals_out_of_the_cap_and_the_count(memory):
    accepted = check_fetch(request(), TRUST, memory, now=NOW)
    lent = source({CELLS: [(9000, 1.0)], SPEED: [(9000, 50.0)]}, [])
    event = fetch_event(accepted, FetchSource(lent.keys, lent.newest_ms, lent.capture,
                                              lent.emit, lambda key: key != SPEED), now_ms=1)
    assert event.data["samples"] == {CELLS: [[9000, 1.0]]} and event.data["total"] == 1
