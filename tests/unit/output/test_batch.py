import cbor2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.errors import WireFormatError
from agent.output.batch import (
    CONTENT_TYPE,
    Batcher,
    BatchIdentity,
    _shared_time_columns,
    decompress_payload,
    open_batch,
)
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.body import decode_varints
from agent.wire.cose import Signer, verify
from agent.wire.keys import key_id
from tests.helpers.dbc_fixtures import write_small_dbc


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keyring(key):
    return {key_id(key.public_key()): key.public_key()}


def make_batcher(tmp_path, key, ring, dictionary_every=60, clock="ntp",
                 gps_correction=lambda: None, schema=2):
    database = load_dbc([write_small_dbc(tmp_path)]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.Engine.*"), SignalRule("can0.Motor.Torque", mode="stats"))),
        {"can0": database})
    identity = BatchIdentity(vehicle="v1", boot=bytes(range(16)), config_version=4,
                             dbc_digest=b"d" * 32, clock=lambda: clock,
                             gps_correction=gps_correction)
    return plan, Batcher(plan, ring, identity, Signer(key, CONTENT_TYPE),
                         lambda: {"can0.frames": 42}, dictionary_every=dictionary_every,
                         schema=schema)


def test_sealed_batch_opens_to_the_records_of_its_window(tmp_path, key, keyring):
    ring = Ring(1000, float_signals=frozenset({3}))
    plan, batcher = make_batcher(tmp_path, key, ring)
    speed, torque = plan.signals[0].index, plan.signals[3].index
    assert plan.signals[3].key == "can0.Motor.Torque"
    for second in range(3):
        ring.append(1000 * second, speed, Field.VALUE, 100 + second)
    for field, value in [(Field.MIN, -1.5), (Field.MAX, 2.5), (Field.SUM, 4.0), (Field.COUNT, 5)]:
        ring.append(0, torque, field, value)
    sealed = batcher.seal(0, 3000)
    body = open_batch(sealed.envelope, keyring)
    assert (body.vehicle, body.seq, body.t0_ms, body.t1_ms, body.clock, body.config_version) == (
        "v1", 0, 0, 3000, "ntp", 4)
    assert body.health == {"can0.frames": 42, "ring.lost": 0}
    by_signal = {s.signal: s for s in body.series}
    assert by_signal[speed].times_ms == (0, 1000, 2000)
    assert by_signal[speed].columns == ((100, 101, 102),)
    assert by_signal[torque].columns == ((-1.5,), (2.5,), (4.0,), (5,))
    assert body.dictionary is not None and body.dictionary[speed].key == "can0.Engine.Speed"
    assert sealed.samples == 4 == body.sample_count
    second = open_batch(batcher.seal(3000, 6000).envelope, keyring)
    assert second.seq == 1 and second.series == () and second.dictionary is None


def test_series_travel_quiet_first_and_open_to_the_same_values(tmp_path, key, keyring):
    ring = Ring(1000, float_signals=frozenset({3}))
    plan, batcher = make_batcher(tmp_path, key, ring)
    speed, temp, gear, torque = (s.index for s in plan.signals)
    written = {speed: [100, 350, 90, 420, 5, 300], temp: [20, 20, 21, 21, 21, 22],
               gear: [3] * 6}
    for second in range(6):
        for signal, values in written.items():
            ring.append(1000 * second, signal, Field.VALUE, values[second])
    for field, value in [(Field.MIN, -1.5), (Field.MAX, 2.5), (Field.SUM, 4.0), (Field.COUNT, 5)]:
        ring.append(0, torque, field, value)
    envelope = batcher.seal(0, 6000).envelope
    document = cbor2.loads(decompress_payload(verify(envelope, keyring).payload))
    assert decode_varints(document["sig"][0]) == [gear, temp, speed, torque]
    by_signal = {s.signal: s for s in open_batch(envelope, keyring).series}
    assert {signal: list(by_signal[signal].columns[0]) for signal in written} == written
    assert by_signal[torque].columns == ((-1.5,), (2.5,), (4.0,), (5,))


def test_schema_1_is_still_written_on_request_and_opens_to_the_same_series(tmp_path, key,
                                                                          keyring):
    bodies = []
    for schema in (1, 2):
        ring = Ring(1000, float_signals=frozenset({3}))
        plan, batcher = make_batcher(tmp_path, key, ring, schema=schema)
        for second in range(4):
            for signal in (0, 1, 2):
                ring.append(1000 * second, signal, Field.VALUE, signal * 7 + second % 2)
        for field, value in [(Field.MIN, 1.5), (Field.MAX, 2.5), (Field.SUM, 4.0),
                             (Field.COUNT, 2)]:
            ring.append(0, 3, field, value)
        envelope = batcher.seal(0, 4000).envelope
        document = cbor2.loads(decompress_payload(verify(envelope, keyring).payload))
        assert document["v"] == schema
        bodies.append(open_batch(envelope, keyring))
    assert [body.schema for body in bodies] == [1, 2]
    assert bodies[0].series == bodies[1].series and len(bodies[0].series) == 4


def test_ring_overrun_is_counted_and_partial_stats_groups_skipped(tmp_path, key, keyring):
    ring = Ring(6, float_signals=frozenset({3}))
    plan, batcher = make_batcher(tmp_path, key, ring)
    for t in range(3):
        for field, value in [(Field.MIN, 1.0), (Field.MAX, 2.0), (Field.SUM, 3.0),
                             (Field.COUNT, 2)]:
            ring.append(t, 3, field, value)
    body = open_batch(batcher.seal(0, 3).envelope, keyring)
    assert body.health["ring.lost"] == 6
    assert body.series[0].times_ms == (2,)


def test_tampering_and_unknown_keys_fail_verification(tmp_path, key, keyring):
    _, batcher = make_batcher(tmp_path, key, Ring(10))
    envelope = batcher.seal(0, 1000).envelope
    protected, unprotected, payload, signature = cbor2.loads(envelope).value
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(WireFormatError, match="signature does not verify"):
        open_batch(cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected), tampered,
                                                  signature])), keyring)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(WireFormatError, match="unknown key id"):
        open_batch(envelope, {key_id(other.public_key()): other.public_key()})
    with pytest.raises(WireFormatError, match="not a COSE_Sign1"):
        verify(cbor2.dumps([1, 2]), keyring)
    with pytest.raises(WireFormatError, match="not a CBOR document"):
        verify(b"\xff\xfe", keyring)


def test_envelope_is_cose_sign1_with_eddsa_and_kid(tmp_path, key):
    _, batcher = make_batcher(tmp_path, key, Ring(10))
    tagged = cbor2.loads(batcher.seal(0, 1000).envelope)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    assert cbor2.loads(protected) == {1: -8, 3: CONTENT_TYPE}
    assert unprotected == {4: key_id(key.public_key())}
    key.public_key().verify(signature, cbor2.dumps(["Signature1", protected, b"", payload]))


def test_dictionary_travels_every_nth_batch(tmp_path, key, keyring):
    _, batcher = make_batcher(tmp_path, key, Ring(10), dictionary_every=3)
    present = [open_batch(batcher.seal(i, i + 1).envelope, keyring).dictionary is not None
               for i in range(7)]
    assert present == [True, False, False, True, False, False, True]


def test_gps_correction_moves_every_time_and_names_the_clock(tmp_path, key, keyring):
    ring = Ring(1000)
    corrections = iter([None, 86_400_123])  # no fix yet; then the RTC is a day and 123 ms slow
    plan, batcher = make_batcher(tmp_path, key, ring, clock="rtc",
                                 gps_correction=lambda: next(corrections))
    speed = plan.signals[0].index
    ring.append(500, speed, Field.VALUE, 7)
    before = open_batch(batcher.seal(0, 1000).envelope, keyring)
    ring.append(1500, speed, Field.VALUE, 8)
    after = open_batch(batcher.seal(1000, 2000).envelope, keyring)
    assert (before.clock, before.t0_ms, before.t1_ms, before.series[0].times_ms) == (
        "rtc", 0, 1000, (500,))
    assert (after.clock, after.t0_ms, after.t1_ms, after.series[0].times_ms) == (
        "gps", 86_401_123, 86_402_123, (86_401_623,))


def test_time_columns_shared_or_not_open_to_each_signals_own_times(tmp_path, key, keyring):
    ring = Ring(1000)
    plan, batcher = make_batcher(tmp_path, key, ring)
    a, b, c = (s.index for s in plan.signals[:3])
    times = {a: (0, 1000, 2000), b: (0, 1000, 2000), c: (500, 1500, 2500)}  # c: same length
    for second in range(3):
        for signal, at in times.items():
            ring.append(at[second], signal, Field.VALUE, signal * 10 + second)
    ring.append(2700, a, Field.VALUE, 7)  # a now has four samples, b still three
    body = open_batch(batcher.seal(0, 3000).envelope, keyring)
    by_signal = {s.signal: s for s in body.series}
    assert by_signal[a].times_ms == (0, 1000, 2000, 2700)
    assert by_signal[a].columns == ((a * 10, a * 10 + 1, a * 10 + 2, 7),)
    assert by_signal[b].times_ms == (0, 1000, 2000)
    assert by_signal[c].times_ms == (500, 1500, 2500)
    assert by_signal[c].columns == ((c * 10, c * 10 + 1, c * 10 + 2),)


def test_equal_length_time_columns_are_shared_only_when_their_times_are_equal():
    # Two signals on the same ticks, then one with as many samples on later ticks: the third
    # column was once encoded from the second row (the first row of its *distinct* number).
    times = np.array([0, 1000, 2000, 0, 1000, 2000, 5000, 6000, 7000])
    columns = _shared_time_columns(times, np.array([0, 3, 6]))
    assert [decode_varints(column) for column in columns] == [
        [0, 1000, 2000], [0, 1000, 2000], [5000, 6000, 7000]]


def test_a_signal_that_went_quiet_keeps_its_own_times_beside_equal_counts(tmp_path, key,
                                                                        keyring):
    # A parked car: Speed and Temp tick through the first seconds; Gear's message is quiet,
    # then sends as many samples later in the window.
    ring = Ring(1000)
    plan, batcher = make_batcher(tmp_path, key, ring)
    speed, temp, gear = (s.index for s in plan.signals[:3])
    times = {speed: (0, 1000, 2000), temp: (0, 1000, 2000), gear: (5000, 6000, 7000)}
    for second in range(3):
        for signal, at in times.items():
            ring.append(at[second], signal, Field.VALUE, signal * 10 + second)
    by_signal = {s.signal: s for s in open_batch(batcher.seal(0, 8000).envelope,
                                                 keyring).series}
    assert {signal: by_signal[signal].times_ms for signal in times} == times
    assert by_signal[gear].columns == ((gear * 10, gear * 10 + 1, gear * 10 + 2),)
