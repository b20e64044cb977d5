"""tools/fleet-sim's vehicles: the agent's own batches, each vehicle its own kept key, and
what the backend makes of them (the publishing is tested against a real broker in
tests/integration/test_fleet_scale_out.py)."""

import pytest
from devkit.fleet_sim import (
    fleet_messages,
    fleet_plan,
    main,
    make_vehicles,
    vehicle_keys,
    vehicle_names,
)
from fleet.backend import Backend, load_keyring, sample_rows
from fleet.dataset import sample_table

from agent.wire.dictionary import dictionary_leaf


@pytest.fixture(scope="module")
def shared():
    return fleet_plan(800, 60, pool=2)


def test_each_vehicle_publishes_its_dictionary_then_a_batch_a_minute_on_its_topics(
        tmp_path, shared):
    vehicles = make_vehicles(3, shared, tmp_path / "keys", "car-", from_boot=True)
    messages = list(fleet_messages(vehicles, shared, "fleet", 2, 1_790_000_000_000))
    did = vehicles[0].batcher.dictionary_id
    assert [(m.topic, m.retain) for m in messages[:3]] == [
        (f"fleet/car-0000{n}/{dictionary_leaf(did)}", True) for n in range(3)]
    assert [m.topic for m in messages[3:]] == [f"fleet/car-0000{n}/telemetry"
                                               for _ in range(2) for n in range(3)]
    assert {m.samples for m in messages[3:]} == {800}
    backend = Backend(*load_keyring([f"*={tmp_path / 'keys'}"]))
    for message in messages[:3]:
        backend.receive_dictionary(message.payload)
    bodies = [backend.receive(m.payload).body for m in messages[3:]]
    assert backend.rejected == 0
    assert [(b.vehicle, b.seq) for b in bodies] == [(f"car-0000{n}", minute)
                                                    for minute in range(2) for n in range(3)]
    assert bodies[0].boot != bodies[1].boot
    assert bodies[0].t0_ms == 1_790_000_000_000 and bodies[3].t0_ms == 1_790_000_060_000


def test_the_data_set_table_of_800_one_sample_series_equals_the_rows(tmp_path, shared):
    """The vectorised label lookup (one searchsorted for every series) against the
    row-by-row decoding, on a batch where every signal has one sample."""
    vehicle = make_vehicles(1, shared, tmp_path / "keys", "car-")[0]
    dictionary, message = fleet_messages([vehicle], shared, "fleet", 1, 1_790_000_000_000)
    backend = Backend(*load_keyring([f"*={tmp_path / 'keys'}"]))
    backend.receive_dictionary(dictionary.payload)
    body = backend.receive(message.payload).body
    dictionary = backend.dictionaries.lookup(body.dictionary_id)
    table = sample_table(body, dictionary).to_pylist()
    rows = list(sample_rows(body, dictionary))
    assert len(table) == len(rows) == 800
    assert [r["label"] for r in table] == [r.get("label") for r in rows]
    assert sum(r["label"] is not None for r in table) > 0
    assert [r["value"] for r in table] == [r["value"] for r in rows]


def test_keys_are_made_once_and_kept(tmp_path):
    names = vehicle_names(2, "v-")
    first = vehicle_keys(names, tmp_path)
    again = vehicle_keys(names, tmp_path)
    assert [k.public_key() == a.public_key() for k, a in zip(first, again, strict=True)] \
        == [True, True]
    assert sorted(p.name for p in tmp_path.glob("*.pub")) == ["v-00000.pub", "v-00001.pub"]
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "private" / "v-00000.key").stat().st_mode & 0o777 == 0o600


def test_bad_options_are_errors_not_crashes(tmp_path, capsys):
    assert main(["--vehicles", "0", "--keys-dir", str(tmp_path)]) == 2
    assert main(["--period", "7", "--plaintext", "--port", "1",
                 "--keys-dir", str(tmp_path)]) == 2
    assert "divisor of 60" in capsys.readouterr().err


def test_a_steady_fleet_carries_no_dictionary_in_band_as_running_agents_do(
        tmp_path, shared):
    vehicles = make_vehicles(20, shared, tmp_path / "keys", "car-")
    starts = [v.batcher.next_seq for v in vehicles]
    assert all(1 <= seq <= 59 for seq in starts) and len(set(starts)) > 10
    backend = Backend(*load_keyring([f"*={tmp_path / 'keys'}"]))
    messages = list(fleet_messages(vehicles, shared, "fleet", 3, 1_790_000_000_000))
    bodies = [backend.receive(m.payload).body for m in messages if not m.retain]
    assert bodies and all(b.dictionary is None for b in bodies)
    booted = make_vehicles(3, shared, tmp_path / "keys", "new-", from_boot=True)
    backend = Backend(*load_keyring([f"*={tmp_path / 'keys'}"]))
    bodies = [backend.receive(m.payload).body
              for m in fleet_messages(booted, shared, "fleet", 3, 1_790_000_000_000)
              if not m.retain]
    assert [(b.seq, b.dictionary is not None) for b in bodies if b.vehicle == "new-00000"] \
        == [(0, True), (1, False), (2, False)]
