"""Stateless backend workers against a real Mosquitto: any worker decodes any batch, because
the vehicle's uplink keeps its signed dictionary retained (docs/wire-format.md §4.9)."""

from __future__ import annotations

import json
import signal

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fleet.query import gaps

from agent.config.schema import SamplingConfig, SignalRule, UplinkConfig
from agent.decoding.dbc import load_dbc
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.output.spool import Spool
from agent.output.uplink import Uplink
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from agent.wire.dictionary import dictionary_leaf
from tests.helpers.agent_setup import start_backend
from tests.helpers.capture import Capture
from tests.helpers.dbc_fixtures import write_small_dbc
from tests.helpers.support import wait_until

VEHICLE = "demo-0001"


class Vehicle:
    """The agent's own batch and uplink code: sealed batches, spooled, published at QoS 1,
    and the dictionary retained as the daemon publishes it."""

    def __init__(self, directory, port, tls) -> None:
        key = Ed25519PrivateKey.generate()
        self.public_key = directory / "vehicle.pub"
        self.public_key.write_bytes(key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        database = load_dbc([write_small_dbc(directory)]).database
        plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.*"),)),
                          {"can0": database})
        self.gear = next(s.index for s in plan.signals if s.key == "can0.Engine.Gear")
        self.ring = Ring(1000)
        boot = bytes(range(16))
        self.batcher = Batcher(plan, self.ring, BatchIdentity(
            vehicle=VEHICLE, boot=boot, config_version=1, dbc_digest=bytes(32),
            clock=lambda: "ntp"), Signer(key, CONTENT_TYPE), dict, dictionary_every=60)
        self.spool = Spool(directory / "spool.db", 2**24)
        self.uplink = Uplink(UplinkConfig(host="127.0.0.1", port=port, ca_cert=tls.ca_cert,
                                          cert=tls.cert, key=tls.key, reconnect_min=0.2),
                             VEHICLE, boot, self.spool)
        self.boot = boot

    def start(self, *, retain: bool = True) -> None:
        """`retain=False`: as an agent from before retained dictionaries."""
        self.uplink.start()
        if retain:
            self.uplink.retain("dictionary", dictionary_leaf(self.batcher.dictionary_id),
                               self.batcher.dictionary_envelope())

    def send(self, count: int) -> None:
        for _ in range(count):
            seq = self.batcher.next_seq
            self.ring.append(seq * 1000 + 500, self.gear, Field.VALUE, seq % 4)
            sealed = self.batcher.seal(seq * 1000, (seq + 1) * 1000)
            self.uplink.submit(self.spool.put("telemetry", self.boot, sealed.seq,
                                              sealed.envelope))

    def delivered(self) -> bool:
        return not self.spool.next_batches(1)

    def stop(self) -> None:
        self.uplink.stop()


@pytest.fixture
def vehicle(tmp_path, mosquitto, dev_pki):
    car = Vehicle(tmp_path, mosquitto.port, dev_pki.client(VEHICLE))
    car.start()
    yield car
    car.stop()


def _report(backend, path):
    backend.send_signal(signal.SIGTERM)
    _, err = backend.communicate(timeout=60)
    assert backend.returncode == 0, err[-3000:]
    return json.loads(path.read_text())


def test_a_worker_started_after_the_last_in_band_dictionary_decodes_every_batch(
        tmp_path, mosquitto, dev_pki, vehicle):
    vehicle.send(1)  # seq 0 carries the dictionary in band; no worker hears it
    assert wait_until(vehicle.delivered, timeout=30)
    report_path = tmp_path / "late.json"
    late = start_backend(mosquitto.port, dev_pki.client("backend"),
                         f"{VEHICLE}={vehicle.public_key}", "--format", "jsonl",
                         "--output", str(tmp_path / "late.jsonl"),
                         "--report", str(report_path), "--timeout", "300")
    vehicle.send(20)  # seq 1..20: none carries the dictionary
    assert wait_until(vehicle.delivered, timeout=60)
    rows = tmp_path / "late.jsonl"
    assert wait_until(lambda: len(rows.read_text().splitlines()) == 20, timeout=60)
    report = _report(late, report_path)
    assert report["verified"] == 20 and report["decoded"] == 20
    assert report["undecodable"] == 0 and report["held"] == 0
    labels = {json.loads(line)["seq"]: json.loads(line)["value"]
              for line in rows.read_text().splitlines()}
    assert labels == {seq: seq % 4 for seq in range(1, 21)}


def test_two_workers_in_one_shared_group_decode_every_batch(tmp_path, mosquitto, dev_pki,
                                                             vehicle):
    workers = []
    for name in ("a", "b"):
        workers.append((start_backend(
            mosquitto.port, dev_pki.client("backend"), f"{VEHICLE}={vehicle.public_key}",
            "--group", "workers", "--report", str(tmp_path / f"{name}.json"),
            "--format", "jsonl", "--output", str(tmp_path / f"{name}.jsonl"),
            "--dictionary-cache", str(tmp_path / "dictionaries"), "--timeout", "300",
            "--dataset", str(tmp_path / "dataset"), "--worker", name),
            tmp_path / f"{name}.json"))
    vehicle.send(40)
    assert wait_until(vehicle.delivered, timeout=60)
    # A row per batch: wait until the two workers together have written every batch.
    assert wait_until(lambda: sum(len((tmp_path / f"{name}.jsonl").read_text().splitlines())
                                  for name in ("a", "b")) == 40, timeout=60)
    reports = [_report(backend, path) for backend, path in workers]
    assert sum(r["verified"] for r in reports) == 40
    assert all(r["verified"] > 0 for r in reports), "the group did not share the batches"
    assert sum(r["decoded"] for r in reports) == 40
    assert sum(r["undecodable"] for r in reports) == 0
    assert (tmp_path / "dictionaries" / f"{vehicle.batcher.dictionary_id.hex()}.cose").exists()
    # One Parquet data set from both workers: every batch's sample, each once.
    samples = pq.read_table(tmp_path / "dataset" / "samples").to_pylist()
    assert sorted(row["seq"] for row in samples) == list(range(40))
    assert {row["vehicle"] for row in samples} == {VEHICLE}
    assert all(row["raw"] == row["seq"] % 4 for row in samples)
    files = {p.name for p in (tmp_path / "dataset").rglob("*.parquet")}
    assert {name.split("-")[1] for name in files} == {"a", "b"}
    # Sequence coverage over both workers' files: complete, no duplicate.
    assert gaps_of(tmp_path / "dataset") == [{
        "vehicle": VEHICLE, "boot": vehicle.boot.hex(), "first": 0, "last": 39,
        "batches": 40, "duplicates": 0, "missing": []}]


def gaps_of(root):
    import duckdb

    connection = duckdb.connect()
    try:
        return gaps(connection, root)
    finally:
        connection.close()


def test_the_vehicle_publishes_its_dictionary_again_when_it_reconnects(mosquitto, dev_pki,
                                                                        vehicle):
    backend_tls = dev_pki.client("backend")
    topic = f"fleet/{VEHICLE}/{dictionary_leaf(vehicle.batcher.dictionary_id)}"
    first = Capture(mosquitto.port, backend_tls, "fleet/+/dictionary/+")
    assert wait_until(lambda: first.count() >= 1, timeout=30)
    assert first.messages[0] == (topic, vehicle.batcher.dictionary_envelope())
    first.close()
    # The broker loses it (an operator cleared it); at the vehicle's next connect it is back.
    first.client.reconnect()
    first.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    first.client.disconnect()
    mosquitto.restart()
    assert wait_until(lambda: vehicle.uplink.stats().connects >= 2, timeout=60)
    later = Capture(mosquitto.port, backend_tls, "fleet/+/dictionary/+")
    try:
        assert wait_until(lambda: later.count() >= 1, timeout=30)
        assert later.messages[-1] == (topic, vehicle.batcher.dictionary_envelope())
    finally:
        later.close()


def test_without_a_retained_dictionary_batches_wait_the_hold_then_are_undecodable_with_why(
        tmp_path, mosquitto, dev_pki):
    old = Vehicle(tmp_path, mosquitto.port, dev_pki.client(VEHICLE))
    old.start(retain=False)
    try:
        old.send(1)  # the only batch with the dictionary, before the worker
        assert wait_until(old.delivered, timeout=30)
        report_path = tmp_path / "report.json"
        worker = start_backend(mosquitto.port, dev_pki.client("backend"),
                               f"{VEHICLE}={old.public_key}", "--hold", "1",
                               "--report", str(report_path), "--count", "3")
        old.send(3)
        _, err = worker.communicate(timeout=60)  # --count: it ends by itself, after the hold
        assert worker.returncode == 0, err[-3000:]
    finally:
        old.stop()
    report = json.loads(report_path.read_text())
    assert report["verified"] == 3 and report["decoded"] == 0 and report["undecodable"] == 3
    did = old.batcher.dictionary_id.hex()
    assert [(b["seq"], b["reason"]) for b in report["undecodable_batches"]] == [
        (seq, f"dictionary {did} not received within 1 s") for seq in (1, 2, 3)]
