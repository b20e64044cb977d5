"""`tools/backend query`: gaps, last values, series and events from the stored data set."""

import json

from fleet.backend import main
from fleet.dataset import DatasetWriter

from agent.events.codec import EventBody
from tests.unit.fleet.test_dataset import DICTIONARY, SERIES, T0, body


def _query(capsys, root, *command):
    assert main(["query", root, "--json", *command]) == 0
    return json.loads(capsys.readouterr().out)


def _stored(tmp_path):
    """Two workers: seq 0-2 and 5 of boot A (3, 4 missing; 2 stored twice), and a vehicle
    with one batch."""
    first, second = DatasetWriter(tmp_path, "w1"), DatasetWriter(tmp_path, "w2")
    for writer, seq in [(first, 0), (second, 1), (first, 2), (second, 2), (second, 5)]:
        batch = body(vehicle="v1", seq=seq)
        writer.add_received(batch)
        writer.add_samples(batch, DICTIONARY)
    other = body(vehicle="0042", series=SERIES[:1], seq=0)
    first.add_received(other)
    first.add_samples(other, DICTIONARY)
    first.add_event(EventBody(vehicle="v1", boot=bytes(16), seq=0, type="stop", time_ms=T0,
                              clock="ntp", config_version=1, privacy=None, data={"s": 30},
                              positions={"at": (52.5, 13.4)}))
    first.flush()
    second.flush()
    return str(tmp_path)


def test_gaps_and_duplicates_come_from_every_worker_s_files(tmp_path, capsys):
    root = _stored(tmp_path)
    assert _query(capsys, root, "gaps") == [
        {"vehicle": "0042", "boot": bytes(range(16)).hex(), "first": 0, "last": 0,
         "batches": 1, "duplicates": 0, "missing": []},
        {"vehicle": "v1", "boot": bytes(range(16)).hex(), "first": 0, "last": 5,
         "batches": 4, "duplicates": 1, "missing": [[3, 4]]}]


def test_last_value_per_vehicle_series_and_events(tmp_path, capsys):
    root = _stored(tmp_path)
    last = _query(capsys, root, "last", "--signal", "can0.Engine.Gear")
    assert [(row["vehicle"], row["value"], row["label"]) for row in last] == [
        ("0042", 7.0, None), ("v1", 7.0, None)]
    gear = _query(capsys, root, "series", "--signal", "can0.Engine.Gear", "--vehicle", "v1")
    # Seq 2 is stored by both workers: its samples are answered once.
    assert len(gear) == 4 * 3 and gear[0]["label"] == "D"
    stats = _query(capsys, root, "series", "--signal", "can0.Engine.Speed", "--vehicle", "0042")
    assert stats == []
    (event,) = _query(capsys, root, "events", "--vehicle", "v1")
    assert event["event"] == "stop" and event["positions"] == {"at": [52.5, 13.4]}


def test_an_empty_data_set_answers_nothing_and_a_table_is_printed(tmp_path, capsys):
    assert _query(capsys, str(tmp_path), "gaps") == []
    _stored(tmp_path)
    assert main(["query", str(tmp_path), "gaps"]) == 0
    assert "missing" in capsys.readouterr().out
