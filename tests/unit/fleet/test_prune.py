"""Which retained dictionaries `tools/backend dictionaries prune` clears: the rule alone (the
broker side is tests/integration/test_fleet_prune.py)."""

import dataclasses
from datetime import UTC, datetime, timedelta

from fleet.dataset import DatasetWriter
from fleet.prune import Retained, parse_topic, to_clear, usage

from tests.unit.fleet.test_dataset import body

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
DAY_MS = 86_400_000


def stored(tmp_path, *batches):
    """(vehicle, did hex, days ago) per batch, written as a worker writes them."""
    writer = DatasetWriter(tmp_path, "w1")
    now_ms = int(NOW.timestamp() * 1000)
    for seq, (vehicle, did, days) in enumerate(batches):
        t0 = now_ms - int(days * DAY_MS) - 60_000
        writer.add_received(dataclasses.replace(
            body(vehicle=vehicle, seq=seq), t0_ms=t0, t1_ms=t0 + 60_000,
            dictionary_id=bytes.fromhex(did)))
    writer.flush()
    return usage(tmp_path)


def test_only_dictionaries_unused_for_long_and_not_current_are_cleared(tmp_path):
    last_used, current = stored(tmp_path, ("v1", "aa" * 8, 40), ("v1", "bb" * 8, 0.1),
                                ("v2", "aa" * 8, 40), ("v3", "cc" * 8, 5))
    assert current == {"v1": "bb" * 8, "v2": "aa" * 8, "v3": "cc" * 8}
    retained = [Retained(f"fleet/{v}/dictionary/{d}", v, d) for v, d in [
        ("v1", "aa" * 8),   # old, replaced by bb: cleared
        ("v1", "bb" * 8),   # current
        ("v2", "aa" * 8),   # old but still v2's current (a parked car): kept
        ("v3", "cc" * 8),   # used 5 days ago: kept at 30 days
        ("v3", "dd" * 8)]]  # never used by a stored batch (its batches may be on the way)
    assert to_clear(retained, last_used, current, NOW, timedelta(days=30)) == [retained[0]]
    assert to_clear(retained, last_used, current, NOW, timedelta(days=1)) == [retained[0]]


def test_an_empty_data_set_clears_nothing(tmp_path):
    last_used, current = usage(tmp_path)
    retained = [Retained("fleet/v1/dictionary/" + "aa" * 8, "v1", "aa" * 8)]
    assert to_clear(retained, last_used, current, NOW, timedelta(0)) == []


def test_dictionary_topics_are_parsed_by_their_levels():
    assert parse_topic("fleet/v1/dictionary/abcd", "fleet") == Retained(
        "fleet/v1/dictionary/abcd", "v1", "abcd")
    assert parse_topic("fleet/v1/telemetry", "fleet") is None
    assert parse_topic("other/v1/dictionary/abcd", "fleet") is None
