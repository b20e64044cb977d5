"""Stateless workers: dictionaries from the retained topic, the shared cache, batches on hold."""

import dataclasses
import os

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet.backend import Backend, is_dictionary_topic
from fleet.dictionaries import DictionaryStore, HeldBatches, open_dictionary

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.errors import WireFormatError
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.body import BatchBody
from agent.wire.cose import Signer
from agent.wire.dictionary import DICTIONARY_CONTENT_TYPE, encode_dictionary
from agent.wire.keys import key_id
from tests.helpers.dbc_fixtures import write_small_dbc


@pytest.fixture
def vehicle(tmp_path):
    key = Ed25519PrivateKey.generate()
    database = load_dbc([write_small_dbc(tmp_path)]).database
    plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.*"),)), {"can0": database})
    ring = Ring(100)
    identity = BatchIdentity(vehicle="v1", boot=bytes(16), config_version=1,
                             dbc_digest=bytes(32), clock=lambda: "rtc")
    batcher = Batcher(plan, ring, identity, Signer(key, CONTENT_TYPE), dict,
                      dictionary_every=60)
    gear = next(s.index for s in plan.signals if s.key == "can0.Engine.Gear")
    return batcher, ring, gear, {key_id(key.public_key()): key.public_key()}, key


def _seal(batcher, ring, gear, n):
    ring.append(n * 1000 + 500, gear, Field.VALUE, 3)
    return batcher.seal(n * 1000, (n + 1) * 1000).envelope


def test_the_retained_dictionary_is_signed_and_names_its_id(vehicle):
    batcher, _, _, keyring, _ = vehicle
    did, dictionary = open_dictionary(batcher.dictionary_envelope(), keyring)
    assert did == batcher.dictionary_id and dictionary == batcher.dictionary


def test_a_dictionary_under_another_id_or_signed_by_a_stranger_is_refused(vehicle):
    batcher, _, _, keyring, key = vehicle
    stranger = Signer(Ed25519PrivateKey.generate(), DICTIONARY_CONTENT_TYPE)
    document = encode_dictionary(batcher.dictionary)
    with pytest.raises(WireFormatError, match="unknown"):
        open_dictionary(stranger.sign(_zstd(document)), keyring)
    forged = document.replace(batcher.dictionary_id, bytes(8))
    with pytest.raises(WireFormatError, match="not the id of its entries"):
        open_dictionary(Signer(key, DICTIONARY_CONTENT_TYPE).sign(_zstd(forged)), keyring)


def _zstd(data):
    return zstandard.ZstdCompressor().compress(data)


def test_a_worker_that_missed_the_in_band_dictionary_decodes_with_the_retained_one(vehicle):
    batcher, ring, gear, keyring, _ = vehicle
    envelopes = [_seal(batcher, ring, gear, n) for n in range(3)]  # only seq 0 carries it
    worker = Backend(keyring, hold=30)
    ready = []
    for envelope in envelopes[1:]:
        ready += worker.admit(worker.receive(envelope).body, now=0.0)
    assert ready == [] and len(worker.held) == 2
    released = worker.receive_dictionary(batcher.dictionary_envelope())
    assert [body.seq for body in released] == [1, 2]
    assert [row["label"] for row in worker.rows(released[0])] == ["D"]
    assert worker.undecodable == 0


def test_a_batch_waits_at_most_the_hold_bound_then_is_undecodable_with_a_reason(vehicle):
    batcher, ring, gear, keyring, _ = vehicle
    _seal(batcher, ring, gear, 0)
    worker = Backend(keyring, hold=5)
    assert worker.admit(worker.receive(_seal(batcher, ring, gear, 1)).body, now=100.0) == []
    worker.expire(104.9)
    assert worker.undecodable == 0
    worker.expire(105.0)
    report = worker.report()
    assert report["undecodable"] == 1 and report["held"] == 0
    assert report["undecodable_batches"][0]["seq"] == 1
    assert "not received within 5 s" in report["undecodable_batches"][0]["reason"]


def test_held_batches_are_bounded_in_number():
    held = HeldBatches(bound=60, limit=2)
    bodies = [_body(seq) for seq in range(3)]
    assert held.hold(bodies[0], 0) == [] and held.hold(bodies[1], 0) == []
    given_up = held.hold(bodies[2], 0)
    assert [g.body.seq for g in given_up] == [0] and "more than 2" in given_up[0].reason


def _body(seq):
    return BatchBody(vehicle="v", boot=bytes(16), seq=seq, t0_ms=0, t1_ms=1, clock="rtc",
                     config_version=1, dbc_digest=bytes(32), health={},
                     dictionary_id=bytes(8), dictionary=None, series=())


def test_workers_share_the_on_disk_cache_and_verify_what_they_read(vehicle, tmp_path):
    batcher, ring, gear, keyring, _ = vehicle
    cache = tmp_path / "dictionaries"
    first = Backend(keyring, dictionary_cache=cache)
    first.receive(_seal(batcher, ring, gear, 0))  # carries the dictionary in band
    files = sorted(os.listdir(cache))
    assert files == [f"{batcher.dictionary_id.hex()}.cose"]  # no temp file left behind
    restarted = Backend(keyring, dictionary_cache=cache)
    body = restarted.receive(_seal(batcher, ring, gear, 1)).body
    assert [b.seq for b in restarted.admit(body, now=0.0)] == [1]
    # A file that does not verify is not used (and not trusted because of its name).
    other = DictionaryStore({}, cache)
    assert other.lookup(batcher.dictionary_id) is None
    (cache / files[0]).write_bytes(b"not a dictionary")
    assert DictionaryStore(keyring, cache).lookup(batcher.dictionary_id) is None


def test_a_cache_file_under_the_wrong_name_is_not_used(vehicle, tmp_path):
    batcher, _, _, keyring, _ = vehicle
    cache = tmp_path / "dictionaries"
    cache.mkdir()
    (cache / f"{bytes(8).hex()}.cose").write_bytes(batcher.dictionary_envelope())
    assert DictionaryStore(keyring, cache).lookup(bytes(8)) is None


def test_dictionary_topics_are_told_by_their_levels():
    assert is_dictionary_topic("fleet/v1/dictionary/1d696d192ccad35d", "fleet")
    assert not is_dictionary_topic("fleet/dictionary/telemetry", "fleet")
    assert not is_dictionary_topic("fleet/dictionary/events", "fleet")
    assert is_dictionary_topic("a/b/dictionary/dictionary/00", "a/b")


def test_a_released_batch_beyond_its_dictionary_is_undecodable_with_the_reason(vehicle):
    batcher, ring, gear, keyring, _ = vehicle
    _seal(batcher, ring, gear, 0)
    body = Backend(keyring).receive(_seal(batcher, ring, gear, 1)).body
    beyond = dataclasses.replace(body, series=tuple(
        dataclasses.replace(s, signal=len(batcher.dictionary)) for s in body.series))
    worker = Backend(keyring)
    assert worker.admit(beyond, now=0.0) == []
    assert worker.receive_dictionary(batcher.dictionary_envelope()) == []
    (given_up,) = worker.report()["undecodable_batches"]
    assert "beyond the" in given_up["reason"] and worker.undecodable == 1


def test_the_same_dictionary_from_many_vehicles_is_decoded_once_but_each_copy_verified(
        vehicle, monkeypatch):
    """A fleet on one config: every vehicle publishes the same dictionary, signed by itself."""
    batcher, _, _, keyring, key = vehicle
    other = Ed25519PrivateKey.generate()
    both = {**keyring, key_id(other.public_key()): other.public_key()}
    payload = zstandard.ZstdCompressor().compress(encode_dictionary(batcher.dictionary))
    own = Signer(key, DICTIONARY_CONTENT_TYPE).sign(payload)
    theirs = Signer(other, DICTIONARY_CONTENT_TYPE).sign(payload)
    store = DictionaryStore(both)
    assert store.add_envelope(own) == batcher.dictionary_id
    import fleet.dictionaries

    decoded = []
    real = fleet.dictionaries.open_verified
    monkeypatch.setattr(fleet.dictionaries, "open_verified",
                        lambda verified: decoded.append(1) or real(verified))
    assert store.add_envelope(theirs) == batcher.dictionary_id
    assert decoded == []
    tampered = theirs[:-1] + bytes([theirs[-1] ^ 1])
    with pytest.raises(WireFormatError):
        store.add_envelope(tampered)
    stranger = Signer(Ed25519PrivateKey.generate(), DICTIONARY_CONTENT_TYPE).sign(payload)
    with pytest.raises(WireFormatError):
        store.add_envelope(stranger)
