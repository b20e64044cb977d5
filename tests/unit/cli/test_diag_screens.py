"""What `edge-agent diag` screens say, drawn from status documents of hand-made snapshots:
nothing on them may mislead a field technician."""

from __future__ import annotations

import dataclasses

import pytest

from agent.cli.diag import gps, privacy, status
from agent.runtime import status as documents
from agent.sampling.ring import Ring, RingStats
from tests.helpers.snapshots import make_snapshot


@pytest.fixture
def snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one screen line per line printed
    return make_snapshot(tmp_path)


def test_a_full_ring_reads_as_the_look_back_it_holds_not_as_a_problem(snapshot, capsys):
    full = dataclasses.replace(snapshot, ring=RingStats(capacity=1000, written=5000,
                                                        span_ms=95_000))
    assert status.render(documents.status(full)) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ring"))
    assert "holding 95 s of look-back (1000 records, full, the oldest overwritten)" in line
    assert "100%" not in line and "lost" not in line


def test_records_lost_before_batching_are_shown(snapshot, capsys):
    overrun = dataclasses.replace(snapshot, batches=dataclasses.replace(snapshot.batches,
                                                                        ring_lost=7))
    assert status.render(documents.status(overrun)) == 1
    assert "7 lost before batching" in capsys.readouterr().out


def test_the_ring_measures_its_look_back_in_event_time():
    ring = Ring(4)
    assert ring.stats().span_ms == 0
    for time_ms in (1000, 2000, 3000):
        ring.append(time_ms, 0, 0, 1)
    assert ring.stats().span_ms == 2000
    for time_ms in (4000, 5000, 6000):
        ring.append(time_ms, 0, 0, 1)
    assert ring.stats() == RingStats(capacity=4, written=6, span_ms=3000)


def test_privacy_says_full_precision_and_counts_events_in_words(snapshot, capsys):
    assert privacy.render(documents.privacy(snapshot)) == 0
    out = capsys.readouterr().out
    assert "precision full," in out and "full m" not in out
    assert "found trip_start 1;" in out and "{" not in out
    assert "2 positions and 7 captured position samples withheld" in out
    coarse = dataclasses.replace(snapshot, config=dataclasses.replace(
        snapshot.config, privacy=dataclasses.replace(
            snapshot.config.privacy, location=dataclasses.replace(
                snapshot.config.privacy.location, precision_m=500.0))))
    privacy.render(documents.privacy(coarse))
    assert "precision 500 m," in capsys.readouterr().out


def test_warnings_that_quote_config_sections_keep_their_brackets(snapshot, capsys):
    bus_only = dataclasses.replace(snapshot, sources=snapshot.sources[:1])
    assert gps.render(documents.gps(bus_only, {})) == 1
    assert '([[sources]] type = "gpsd")' in capsys.readouterr().out
