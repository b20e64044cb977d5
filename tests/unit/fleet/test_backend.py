import dataclasses
import io
import json
import math

import cbor2
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet.backend import (
    Backend,
    DeliveryTracker,
    Pseudonyms,
    Receipt,
    RowWriter,
    event_line,
    event_row,
    load_keyring,
    main,
    sample_rows,
    summary_line,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.errors import AgentError, KeyFileError
from agent.events.codec import EVENT_CONTENT_TYPE, EventBody, encode_event
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.body import BatchBody, Series, SeriesKind, SignalDef, encode_body
from agent.wire.cose import Signer
from agent.wire.keys import generate_key_pair, key_id
from tests.helpers.dbc_fixtures import write_small_dbc


def test_gaps_and_duplicates_are_tracked_per_vehicle_and_boot():
    tracker = DeliveryTracker()
    for vehicle, boot, seq in [("a", b"1", 0), ("a", b"1", 2), ("a", b"1", 2), ("a", b"2", 0),
                               ("b", b"1", 4), ("a", b"1", 5)]:
        tracker.observe(vehicle, boot, seq)
    assert tracker.duplicates == 1
    assert tracker.gaps() == {("a", b"1"): [1, 3, 4]}  # b started at 4: joined late


@pytest.fixture
def batcher_and_keys(tmp_path):
    key = Ed25519PrivateKey.generate()
    database = load_dbc([write_small_dbc(tmp_path)]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.Engine.*"), SignalRule("can0.Engine.Speed", mode="stats"))),
        {"can0": database})
    ring = Ring(100)
    identity = BatchIdentity(vehicle="v1", boot=bytes(16), config_version=1, dbc_digest=bytes(32),
                             clock=lambda: "rtc")
    batcher = Batcher(plan, ring, identity, Signer(key, CONTENT_TYPE), dict,
                      dictionary_every=2)
    return plan, ring, batcher, {key_id(key.public_key()): key.public_key()}


def test_rows_carry_physical_values_labels_and_stats(batcher_and_keys):
    plan, ring, batcher, keyring = batcher_and_keys
    index = {s.key: s.index for s in plan.signals}
    ring.append(1000, index["can0.Engine.Gear"], Field.VALUE, 3)
    ring.append(1000, index["can0.Engine.Temp"], Field.VALUE, 65)
    for field, value in [(Field.MIN, 100), (Field.MAX, 300), (Field.SUM, 600), (Field.COUNT, 3)]:
        ring.append(0, index["can0.Engine.Speed"], field, value)
    backend = Backend(keyring)
    receipt = backend.receive(batcher.seal(0, 2000).envelope)
    assert receipt.ok and not receipt.duplicate
    rows = {row["signal"]: row for row in backend.rows(receipt.body)}
    assert rows["can0.Engine.Gear"]["value"] == 3 and rows["can0.Engine.Gear"]["label"] == "D"
    assert rows["can0.Engine.Temp"]["value"] == 25 and rows["can0.Engine.Temp"]["unit"] == "degC"
    speed = rows["can0.Engine.Speed"]
    assert (speed["min"], speed["max"], speed["mean"], speed["count"]) == (1.0, 3.0, 2.0, 3)
    assert "verified v1" in summary_line(receipt) and "3 samples" in summary_line(receipt)


def test_a_switch_from_schema_1_to_2_within_a_boot_decodes_without_a_gap(batcher_and_keys):
    plan, ring, old, keyring = batcher_and_keys
    old._schema = 1  # as `[batch] schema = 1` would build it
    gear = next(s.index for s in plan.signals if s.key == "can0.Engine.Gear")
    ring.append(500, gear, Field.VALUE, 3)
    before = old.seal(0, 1000).envelope
    new = Batcher(plan, ring, old._identity, old._signer, dict, dictionary_every=2)
    new.take_over(old)  # what a config update that sets schema = 2 does
    ring.append(1500, gear, Field.VALUE, 0)
    after = new.seal(1000, 2000).envelope
    backend = Backend(keyring)
    receipts = [backend.receive(after), backend.receive(before)]  # spooled v1 drains late
    assert [r.body.schema for r in receipts] == [2, 1] and all(r.ok for r in receipts)
    assert [r.body.seq for r in receipts] == [1, 0]
    labels = [[row["label"] for row in backend.rows(r.body)] for r in reversed(receipts)]
    assert labels == [["D"], ["P"]]
    assert backend.report()["gaps"] == [] and backend.report()["duplicates"] == 0


def test_dictionary_is_cached_across_batches_and_missing_one_is_reported(batcher_and_keys):
    _, _, batcher, keyring = batcher_and_keys
    first, second = batcher.seal(0, 1).envelope, batcher.seal(1, 2).envelope
    late = Backend(keyring)
    assert late.rows(late.receive(second).body) is None and late.undecodable == 1
    backend = Backend(keyring)
    dictionary = backend.receive(first)
    assert list(backend.rows(backend.receive(second).body)) == []
    # No samples: no per-sample figure (not "1842 bytes (1842.000 bytes/sample)").
    assert f"0 samples, {len(first)} bytes, clock" in summary_line(dictionary)
    assert "bytes/sample" not in summary_line(dictionary)
    duplicate = backend.receive(first)
    assert duplicate.duplicate and backend.report()["duplicates"] == 1


def test_a_series_beyond_the_cached_dictionary_is_undecodable_not_a_crash(batcher_and_keys):
    _, ring, batcher, keyring = batcher_and_keys
    backend = Backend(keyring)
    first = backend.receive(batcher.seal(0, 1).envelope)  # carries the dictionary
    size = len(first.body.dictionary)
    beyond = dataclasses.replace(first.body, seq=1, dictionary=None, series=(
        Series(size, SeriesKind.INT_LAST, (5,), ((1,),)),))
    envelope = batcher._signer.sign(zstandard.ZstdCompressor().compress(encode_body(beyond)))
    receipt = backend.receive(envelope)
    assert receipt.ok and backend.rows(receipt.body) is None and backend.undecodable == 1


def test_a_key_bound_to_another_vehicle_is_rejected(batcher_and_keys):
    _, _, batcher, keyring = batcher_and_keys
    kid = next(iter(keyring))
    envelope = batcher.seal(0, 1).envelope
    assert Backend(keyring, {kid: "v1"}).receive(envelope).ok
    receipt = Backend(keyring, {kid: "v2"}).receive(envelope)
    assert not receipt.ok and "claims vehicle 'v1' but is signed with the key of 'v2'" in \
        receipt.error


def test_rejections_are_counted_with_the_reason(batcher_and_keys):
    _, _, batcher, _ = batcher_and_keys
    backend = Backend({})
    receipt = backend.receive(batcher.seal(0, 1).envelope)
    assert not receipt.ok and "unknown key id" in receipt.error
    assert summary_line(receipt).startswith("REJECTED")
    assert backend.receive(b"garbage").ok is False
    assert backend.report()["rejected"] == 2


def test_keyring_from_files_and_folders(tmp_path):
    generate_key_pair(tmp_path / "a.key")
    generate_key_pair(tmp_path / "b.key")
    assert len(load_keyring([tmp_path])[0]) == 2
    keys, bindings = load_keyring([f"v1={tmp_path / 'a.pub'}"])
    assert len(keys) == 1 and list(bindings.values()) == ["v1"]
    with pytest.raises(AgentError, match="no vehicle public keys"):
        load_keyring([tmp_path / "empty"]) if (tmp_path / "empty").mkdir() is None else None
    (tmp_path / "bad.pub").write_text("nope")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_keyring([tmp_path / "bad.pub"])


def _event(vehicle: str, seq: int) -> EventBody:
    return EventBody(vehicle=vehicle, boot=bytes(16), seq=seq, type="stop", time_ms=60_000,
                     clock="rtc", config_version=1, privacy={"consent": "full", "ver": 1},
                     data={"dwell_s": 600}, positions={"at": (48.1, 11.5)})


def test_events_are_verified_checked_against_the_key_and_tracked_apart_from_batches():
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    signer = Signer(key, EVENT_CONTENT_TYPE)
    backend = Backend({kid: key.public_key()}, {kid: "v1"})
    for seq in (0, 2, 2):
        receipt = backend.receive_event(signer.sign(encode_event(_event("v1", seq))))
        assert receipt.ok and receipt.event is not None and receipt.event.data["dwell_s"] == 600
    assert receipt.duplicate and "DUPLICATE" in event_line(receipt)
    assert "stop at 00:01:00 UTC" in event_line(receipt) and "48.10000,11.50000" in \
        event_line(receipt)
    assert event_row(receipt.event)["event"] == "stop"
    stolen = backend.receive_event(signer.sign(encode_event(_event("v2", 3))))
    assert not stolen.ok and "signed with the key of 'v1'" in stolen.error
    not_an_event = backend.receive_event(Signer(key, CONTENT_TYPE).sign(b"x"))
    assert not not_an_event.ok
    report = backend.report()
    assert (report["events"], report["event_duplicates"], report["rejected"]) == (3, 1, 2)
    assert report["event_gaps"] == [{"vehicle": "v1", "boot": "00" * 16, "missing": [1]}]
    assert report["gaps"] == [] and report["verified"] == 0


def _forged_for(batcher, key, vehicle: str, *, protected_kid: bool, unprotected_kid: bool):
    """A batch for `vehicle`, signed by `key` with its kid where the attacker puts it."""
    kid = key_id(key.public_key())
    body = Backend({kid: key.public_key()}).receive(batcher.seal(0, 1).envelope).body
    payload = zstandard.ZstdCompressor().compress(encode_body(
        dataclasses.replace(body, vehicle=vehicle)))
    headers = {1: -8, 3: CONTENT_TYPE, **({4: kid} if protected_kid else {})}
    protected = cbor2.dumps(headers)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {4: kid} if unprotected_kid else {},
                                          payload, signature]))


def test_a_bound_key_cannot_sign_for_another_vehicle_by_moving_its_kid(tmp_path):
    """The attack of issue #20: the key of v1 puts its kid in the protected header only and
    claims v2; the vehicle is bound to the key that verified the signature, wherever its kid."""
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    database = load_dbc([write_small_dbc(tmp_path)]).database
    plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.*"),)), {"can0": database})
    identity = BatchIdentity(vehicle="v1", boot=bytes(16), config_version=1,
                             dbc_digest=bytes(32), clock=lambda: "rtc")
    batcher = Batcher(plan, Ring(10), identity, Signer(key, CONTENT_TYPE), dict)
    backend = Backend({kid: key.public_key()}, {kid: "v1"})
    stolen = backend.receive(_forged_for(batcher, key, "v2", protected_kid=True,
                                         unprotected_kid=False))
    assert not stolen.ok and "claims vehicle 'v2' but is signed with the key of 'v1'" in \
        stolen.error
    both = backend.receive(_forged_for(batcher, key, "v1", protected_kid=True,
                                       unprotected_kid=True))
    assert not both.ok and "kid in both" in both.error
    own = backend.receive(_forged_for(batcher, key, "v1", protected_kid=True,
                                      unprotected_kid=False))
    assert own.ok and own.body.vehicle == "v1"
    assert backend.receive(batcher.seal(1, 2).envelope).ok  # the agent's own envelope
    assert (backend.verified, backend.rejected) == (2, 2)


def test_a_bound_key_cannot_send_events_for_another_vehicle_by_moving_its_kid():
    key = Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    payload = encode_event(_event("v2", 0))
    protected = cbor2.dumps({1: -8, 3: EVENT_CONTENT_TYPE, 4: kid})
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    envelope = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]))
    receipt = Backend({kid: key.public_key()}, {kid: "v1"}).receive_event(envelope)
    assert not receipt.ok and "signed with the key of 'v1'" in receipt.error


# --- what a signed message the backend cannot use comes back as (#20, found by fuzzing) -------

FUZZ_KEY = Ed25519PrivateKey.generate()
FUZZ_KID = key_id(FUZZ_KEY.public_key())
T0 = 1_800_000_000_000


def _signed_body(content_type: str, **fields: object) -> bytes:
    """A batch (content_type CONTENT_TYPE) or an event signed by v1's own key, with `fields`
    of its body replaced: what a vehicle with a bug, or a stolen key, can send."""
    if content_type == CONTENT_TYPE:
        document = cbor2.loads(encode_body(BatchBody(
            vehicle="v1", boot=bytes(16), seq=0, t0_ms=T0, t1_ms=T0 + 60_000, clock="ntp",
            config_version=1, dbc_digest=bytes(32), health={}, dictionary_id=bytes(8),
            dictionary=(SignalDef("can0.M.S", "", 1, 0, False, "last"),),
            series=(Series(0, SeriesKind.INT_LAST, (T0,), ((7,),)),))))
    else:
        document = cbor2.loads(zstandard.ZstdDecompressor().decompress(encode_event(
            dataclasses.replace(_event("v1", 0), time_ms=T0))))
    payload = zstandard.ZstdCompressor().compress(cbor2.dumps({**document, **fields}))
    return Signer(FUZZ_KEY, content_type).sign(payload)


def _everything_the_backend_prints(backend: Backend, envelope: bytes) -> tuple[Receipt, Receipt]:
    """What tools/backend does with a message, as a batch and as an event (as the fuzz
    target does): every line, row and the report."""
    batch = backend.receive(envelope)
    summary_line(batch)
    if batch.ok and batch.body is not None and (rows := backend.rows(batch.body)) is not None:
        RowWriter(io.StringIO(), "jsonl").write(rows)
    event = backend.receive_event(envelope)
    if event.ok and event.event is not None:
        event_line(event)
        RowWriter(io.StringIO(), "jsonl").write(iter([event_row(event.event)]))
    json.dumps(backend.report())
    return batch, event


huge = st.integers(min_value=10**4300, max_value=10**5000)
UNUSABLE = {
    CONTENT_TYPE: st.one_of(
        st.fixed_dictionaries({"v": huge | st.builds(lambda n: [n], huge)}),
        st.fixed_dictionaries({"t0": st.integers(min_value=10**15) | huge}),
        st.fixed_dictionaries({"t1": st.integers(max_value=-1) | st.just(10**18)}),
        st.fixed_dictionaries({"seq": huge}),
        st.fixed_dictionaries({"dict": st.sampled_from([None, {}, [], 10**400, "1"]).map(
            lambda scale: [["can0.M.S", "", scale, 0, "i", "last", None]])})),
    EVENT_CONTENT_TYPE: st.one_of(
        st.fixed_dictionaries({"t": st.integers(min_value=10**15) | st.just(-(10**18)) | huge}),
        st.fixed_dictionaries({"seq": huge}),
        st.fixed_dictionaries({"data": st.sampled_from([{1: 2, "a": 3}, {"n": 10**5000},
                                                        {"b": b"\x00"}])})),
}


@settings(max_examples=60, deadline=None)
@given(content_type=st.sampled_from(sorted(UNUSABLE)), data=st.data())
def test_a_signed_message_the_backend_cannot_use_is_a_rejected_receipt(content_type, data):
    """Each raised from the summary line, the rows or the pseudonym lookup before (ValueError
    of Python's int-to-str limit, year out of range, OverflowError, OSError, TypeError)."""
    fields = data.draw(UNUSABLE[content_type])
    backend = Backend({FUZZ_KID: FUZZ_KEY.public_key()}, {FUZZ_KID: "v1"},
                      Pseudonyms(bytes(32), 86400.0))
    batch, event = _everything_the_backend_prints(backend, _signed_body(content_type, **fields))
    receipt = batch if content_type == CONTENT_TYPE else event
    assert not receipt.ok and receipt.error and len(receipt.error) < 400
    assert "REJECTED" in summary_line(receipt) and backend.report()["rejected"] == 2


def test_the_batch_and_event_these_are_made_from_are_used():
    backend = Backend({FUZZ_KID: FUZZ_KEY.public_key()}, {FUZZ_KID: "v1"})
    batch, _ = _everything_the_backend_prints(backend, _signed_body(CONTENT_TYPE))
    _, event = _everything_the_backend_prints(backend, _signed_body(EVENT_CONTENT_TYPE))
    assert batch.ok and event.ok and backend.report()["rejected"] == 2  # each as the other


def test_a_content_type_of_thousands_of_digits_is_rejected():
    """Found by fuzzing: str() of the protected header's content type raised ValueError."""
    payload = zstandard.ZstdCompressor().compress(b"\xa0")
    protected = cbor2.dumps({1: -8, 3: 10**5000})
    signature = FUZZ_KEY.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    envelope = cbor2.dumps(cbor2.CBORTag(18, [protected, {4: FUZZ_KID}, payload, signature]))
    receipt = Backend({FUZZ_KID: FUZZ_KEY.public_key()}).receive(envelope)
    assert not receipt.ok and "content type (header 3) must be a text string" in receipt.error


def test_a_float_series_of_nan_with_value_labels_gets_no_label():
    """int(nan) raised ValueError in the rows when a float series' signal had choices."""
    t0 = T0
    dictionary = (SignalDef("gps.mode", "", 1.0, 0.0, True, "last", {0: "none", 3: "3d"}),)
    body = BatchBody(vehicle="v1", boot=bytes(16), seq=0, t0_ms=t0, t1_ms=t0 + 1000,
                     clock="ntp", config_version=1, dbc_digest=bytes(32), health={},
                     dictionary_id=bytes(8), dictionary=dictionary,
                     series=(Series(0, SeriesKind.FLOAT_LAST, (t0, t0, t0, t0),
                                    ((math.nan, math.inf, 3.0, 1.0),)),))
    rows = list(sample_rows(body, dictionary))
    assert [row.get("label") for row in rows] == [None, None, "3d", None]


@pytest.mark.parametrize("rotation", ["nan", "inf", "0", "0.0004"])
def test_a_pseudonym_rotation_that_cannot_divide_time_is_refused_at_start(tmp_path, capsys,
                                                                          rotation):
    """ValueError or ZeroDivisionError at the first pseudonymous message before; refused
    before the backend connects now."""
    secret = tmp_path / "secret"
    secret.write_bytes(bytes(32))
    assert main(["--keys", str(tmp_path / "v1.pub"), "--plaintext", "--pseudonym-key",
                 str(secret), "--pseudonym-rotation", rotation]) == 2
    assert "--pseudonym-rotation" in capsys.readouterr().err
