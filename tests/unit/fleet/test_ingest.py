"""`tools/backend ingest`: a vehicle's real spool (sealed at rest) and saved envelopes into the
Parquet data set, each batch once however often it is ingested."""

import json
import shutil
import sqlite3

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fleet.backend import Backend, load_keyring, main
from fleet.dataset import DatasetWriter
from fleet.query import gaps

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.events.codec import EVENT_CONTENT_TYPE, EventBody, encode_event
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.output.spool import PRIORITY_EVENT, Spool
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from tests.helpers.dbc_fixtures import write_small_dbc

VEHICLE = "v-0007"
BOOT = bytes(range(16))


class Car:
    """The agent's own batcher and spool (sealed at rest, keys in the spool's folder)."""

    def __init__(self, directory, *, dictionary_every=60):
        directory.mkdir(parents=True, exist_ok=True)
        self.key = Ed25519PrivateKey.generate()
        self.public = directory / f"{VEHICLE}.pub"
        self.public.write_bytes(self.key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.*"),)),
                          {"can0": load_dbc([write_small_dbc(directory)]).database})
        self.gear = next(s.index for s in plan.signals if s.key == "can0.Engine.Gear")
        self.ring = Ring(1000)
        self.batcher = Batcher(plan, self.ring, BatchIdentity(
            vehicle=VEHICLE, boot=BOOT, config_version=1, dbc_digest=bytes(32),
            clock=lambda: "ntp"), Signer(self.key, CONTENT_TYPE), dict,
            dictionary_every=dictionary_every)
        self.state = directory / "state"
        self.spool = Spool(self.state / "spool.sqlite", 2**24)

    def seal(self, count):
        sealed = []
        for _ in range(count):
            seq = self.batcher.next_seq
            t0 = 1_780_000_000_000 + seq * 1000
            self.ring.append(t0 + 500, self.gear, Field.VALUE, seq % 4)
            sealed.append(self.batcher.seal(t0, t0 + 1000))
        return sealed

    def spool_batches(self, count):
        for batch in self.seal(count):
            self.spool.put("telemetry", BOOT, batch.seq, batch.envelope)

    def event(self, seq):
        body = EventBody(vehicle=VEHICLE, boot=BOOT, seq=seq, type="harsh_braking",
                         time_ms=1_780_000_000_500, clock="ntp", config_version=1,
                         privacy={"consent": "full", "ver": 1},
                         data={"speed": 12.5}, positions={})
        return Signer(self.key, EVENT_CONTENT_TYPE).sign(encode_event(body))


@pytest.fixture
def car(tmp_path):
    return Car(tmp_path / "car")


def ingest(capsys, car, *args):
    code = main(["ingest", "--keys", f"{VEHICLE}={car.public}", "--json", *map(str, args)])
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else None, out.err


def stored(root):
    """(seq, samples) per stored batch, and the coverage query's answer."""
    connection = duckdb.connect()
    rows = connection.execute(
        f"SELECT seq, count(*) FROM read_parquet('{root}/samples/**/*.parquet', "
        "hive_partitioning = true) GROUP BY seq ORDER BY seq").fetchall()
    return rows, gaps(connection, root)


def test_a_spool_sealed_at_rest_is_stored_once_however_often_it_is_ingested(tmp_path, capsys,
                                                                            car):
    car.spool_batches(5)
    car.spool.put("events", BOOT, 0, car.event(0), priority=PRIORITY_EVENT)
    car.spool.close()
    spool = car.state / "spool.sqlite"
    code, summary, err = ingest(capsys, car, spool, "--dataset", tmp_path / "ds")
    assert code == 0, err
    assert summary["stored"] == 5 and summary["samples"] == 5 and summary["events"] == 1
    assert summary["rejected"] == summary["undecodable"] == summary["duplicates"] == 0
    code, again, err = ingest(capsys, car, spool, "--dataset", tmp_path / "ds",
                              "--worker", "ingest2")
    assert code == 0, err
    assert again["already_stored"] == 6
    assert again["duplicates"] == 5 and again["event_duplicates"] == 1
    assert again["stored"] == again["samples"] == 0
    rows, coverage = stored(tmp_path / "ds")
    assert rows == [(seq, 1) for seq in range(5)]
    assert coverage == [{"vehicle": VEHICLE, "boot": BOOT.hex(), "first": 0, "last": 4,
                         "batches": 5, "duplicates": 0, "missing": []}]
    events = duckdb.connect().execute(
        f"SELECT count(*) FROM read_parquet('{tmp_path}/ds/events/**/*.parquet')").fetchone()
    assert events == (1,)


def test_what_live_workers_stored_is_not_stored_again(tmp_path, capsys, car):
    """Batches 0-2 arrived live (a worker wrote them); the spool copy of 0-4 adds 3 and 4."""
    sealed = car.seal(5)
    worker = Backend(*load_keyring([f"{VEHICLE}={car.public}"]))
    live = DatasetWriter(tmp_path / "ds", "w1")
    for batch in sealed[:3]:
        body = worker.receive(batch.envelope).body
        live.add_received(body)
        for ready in worker.admit(body, 0.0):
            live.add_samples(ready, worker.dictionaries.lookup(ready.dictionary_id))
    live.flush()
    for batch in sealed:
        car.spool.put("telemetry", BOOT, batch.seq, batch.envelope)
    car.spool.close()
    code, summary, err = ingest(capsys, car, car.state / "spool.sqlite",
                                "--dataset", tmp_path / "ds")
    assert code == 0, err
    assert summary["duplicates"] == 3 and summary["stored"] == 2
    rows, coverage = stored(tmp_path / "ds")
    assert rows == [(seq, 1) for seq in range(5)]
    assert coverage[0]["duplicates"] == 0 and coverage[0]["missing"] == []


def test_a_sealed_spool_without_its_key_is_rejected_naming_the_key(tmp_path, capsys, car):
    car.spool_batches(2)
    car.spool.close()
    elsewhere = tmp_path / "copied"
    elsewhere.mkdir()
    shutil.copy(car.state / "spool.sqlite", elsewhere / "spool.sqlite")
    code, summary, err = ingest(capsys, car, elsewhere / "spool.sqlite",
                                "--dataset", tmp_path / "ds")
    assert code == 1
    assert summary["rejected"] == 2 and summary["stored"] == 0
    assert "--at-rest-keys" in summary["reject_reasons"][0]
    assert "spool-full.key" in summary["reject_reasons"][0]
    # Given the vehicle's state folder, the same copy opens.
    code, summary, err = ingest(capsys, car, elsewhere / "spool.sqlite", "--dataset",
                                tmp_path / "ds", "--at-rest-keys", car.state)
    assert code == 0, err
    assert summary["stored"] == 2


def test_saved_envelopes_wait_for_a_dictionary_given_later_in_the_input(tmp_path, capsys):
    car = Car(tmp_path / "car", dictionary_every=1000)
    first, *rest = car.seal(4)  # only seq 0 carries the dictionary in band
    saved = tmp_path / "saved"
    saved.mkdir()
    for batch in rest:
        (saved / f"a-{batch.seq}.cose").write_bytes(batch.envelope)
    (saved / ".tmp-half-written").write_bytes(b"\x00")  # hidden: skipped
    code, summary, err = ingest(capsys, car, saved, "--dataset", tmp_path / "ds")
    assert code == 0, err
    assert summary["undecodable"] == 3 and summary["stored"] == 0
    assert "not received" in summary["undecodable_batches"][0]["reason"]
    # The signed dictionary as its own file (as a --dictionary-cache holds it), after them.
    (saved / "z-dictionary.cose").write_bytes(car.batcher.dictionary_envelope())
    code, summary, err = ingest(capsys, car, saved, "--dataset", tmp_path / "ds2",
                                "--dictionary-cache", tmp_path / "cache")
    assert code == 0, err
    assert summary["stored"] == 3 and summary["undecodable"] == 0
    assert summary["dictionaries"] == 1
    assert (tmp_path / "cache" / f"{car.batcher.dictionary_id.hex()}.cose").exists()
    # The cache alone is enough the next time.
    (saved / "z-dictionary.cose").unlink()
    code, summary, err = ingest(capsys, car, saved, "--dataset", tmp_path / "ds3",
                                "--dictionary-cache", tmp_path / "cache")
    assert summary["stored"] == 3 and summary["undecodable"] == 0


def test_bad_input_is_counted_and_reported_never_a_crash(tmp_path, capsys, car):
    good = car.seal(1)[0]
    stranger = Car(tmp_path / "stranger").seal(1)[0]
    (tmp_path / "good.cose").write_bytes(good.envelope)
    (tmp_path / "garbage.cose").write_bytes(b"not cbor at all")
    (tmp_path / "tampered.cose").write_bytes(good.envelope[:-1] + bytes([good.envelope[-1] ^ 1]))
    (tmp_path / "stranger.cose").write_bytes(stranger.envelope)
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE notes (x)")
    code, summary, err = ingest(
        capsys, car, tmp_path / "good.cose", tmp_path / "garbage.cose",
        tmp_path / "tampered.cose", tmp_path / "stranger.cose", tmp_path / "other.sqlite",
        tmp_path / "missing.cose", "--dataset", tmp_path / "ds")
    assert code == 1
    assert summary["stored"] == 1
    assert summary["rejected"] == 3
    assert summary["unreadable_files"] == 2
    assert any("not a vehicle's spool" in reason for reason in summary["unreadable"])
    assert any("missing.cose" in reason for reason in summary["unreadable"])


def test_keys_of_a_fleet_folder_are_bound_to_the_vehicle_named_by_each_file(tmp_path, car):
    keyring, bindings = load_keyring([f"*={car.public.parent}"])
    assert set(bindings.values()) == {VEHICLE}
    assert set(keyring) == set(bindings)
