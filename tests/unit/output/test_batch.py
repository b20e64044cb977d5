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
    ids, columns = _shared_time_columns(times, np.array([0, 3, 6]))
    assert [decode_varints(columns[i]) for i in ids.tolist()] == [
        [0, 1000, 2000], [0, 1000, 2000], [5000, 6000, 7000]]
    assert len(columns) == 2


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


def test_quiet_windows_are_left_out_but_for_the_first_and_a_heartbeat(tmp_path, key, keyring):
    """A parked car: nothing sampled, no batch, except the boot's first window and one
    heartbeat per `heartbeat_ms` of event time; `seq` counts sealed batches, so no gap."""
    ring = Ring(1000)
    plan, batcher = make_batcher(tmp_path, key, ring)
    batcher._heartbeat_ms = 300_000  # as `[batch] heartbeat = 300` sets it, five windows
    speed = plan.signals[0].index
    sealed = {}
    for minute in range(12):
        if minute == 2:
            ring.append(minute * 60_000 + 1000, speed, Field.VALUE, 5)
        batch = batcher.seal_window(minute * 60_000, (minute + 1) * 60_000)
        if batch is not None:
            sealed[minute] = open_batch(batch.envelope, keyring)
    # 0: first of the boot (empty); 2: a sample; 7: five windows after the batch of minute 2.
    assert list(sealed) == [0, 2, 7]
    assert [body.seq for body in sealed.values()] == [0, 1, 2]
    assert sealed[2].sample_count == 1 and sealed[7].series == () and sealed[7].health
    assert (sealed[7].t0_ms, sealed[7].t1_ms) == (7 * 60_000, 8 * 60_000)
    assert batcher.stats().quiet == 9 and batcher.stats().sealed == 3


def test_a_heartbeat_of_zero_seals_every_window(tmp_path, key):
    _, batcher = make_batcher(tmp_path, key, Ring(10))
    assert batcher._heartbeat_ms == 0  # the Batcher's own default; the config's is 3600 s
    assert all(batcher.seal_window(t, t + 1000) is not None for t in range(0, 5000, 1000))


def test_a_time_jump_starts_the_quiet_stretch_afresh(tmp_path, key):
    """Event time stepping back (NTP, a looping replay) must not hold the heartbeat back until
    time catches up, nor a step forward fire it at once."""
    _, batcher = make_batcher(tmp_path, key, Ring(10))
    batcher._heartbeat_ms = 180_000
    assert batcher.seal_window(600_000, 660_000) is not None  # first of the boot
    assert batcher.seal_window(660_000, 720_000) is None
    # Back by ten minutes: three quiet windows from there, then the heartbeat.
    assert [batcher.seal_window(t, t + 60_000) is not None
            for t in range(0, 240_000, 60_000)] == [False, False, True, False]
    # Forward by an hour: again three windows first.
    assert [batcher.seal_window(t, t + 60_000) is not None
            for t in range(3_600_000, 3_840_000, 60_000)] == [False, False, True, False]


def test_the_dictionary_travels_when_new_not_on_a_timer(tmp_path, key, keyring):
    ring = Ring(100)
    plan, batcher = make_batcher(tmp_path, key, ring, dictionary_every=0)
    present = [open_batch(batcher.seal(i, i + 1).envelope, keyring).dictionary is not None
               for i in range(200)]
    assert present == [True] + [False] * 199
    # A reload with the same plan: the dictionary is not new, it does not travel again.
    same = Batcher(plan, ring, batcher._identity, batcher._signer, dict)
    same.take_over(batcher)
    assert open_batch(same.seal(200, 201).envelope, keyring).dictionary is None
    # A plan change: the next batch carries the new one, whichever window that is.
    other = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.Speed"),)),
                       {"can0": load_dbc([write_small_dbc(tmp_path)]).database})
    changed = Batcher(other, ring, batcher._identity, batcher._signer, dict, heartbeat_ms=60_000)
    changed.take_over(same)
    assert changed.seal_window(201, 202) is None  # quiet, no heartbeat due: not sealed
    body = open_batch(changed.seal(202, 203).envelope, keyring)
    assert body.seq == 201 and body.dictionary is not None
    assert body.dictionary_id == changed.dictionary_id != batcher.dictionary_id


def test_a_reload_carries_the_quiet_stretch_to_the_next_heartbeat(tmp_path, key):
    ring = Ring(100)
    plan, old = make_batcher(tmp_path, key, ring)
    old._heartbeat_ms = 300_000
    assert old.seal_window(0, 60_000) is not None
    assert [old.seal_window(t, t + 60_000) for t in (60_000, 120_000)] == [None, None]
    new = Batcher(plan, ring, old._identity, old._signer, dict, heartbeat_ms=300_000)
    new.take_over(old)
    # Five windows after the batch [0, 60 s): the one ending at 360 s, two of them the old one's.
    due = [new.seal_window(t, t + 60_000) is not None for t in (180_000, 240_000, 300_000)]
    assert due == [False, False, True] and new.next_seq == 2
