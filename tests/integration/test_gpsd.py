"""The gpsd source against a real gpsd (gpsfake) replaying the shipped NMEA scenarios."""

from __future__ import annotations

import pytest
from devkit.broker import free_port

from agent.runtime import clock
from agent.sources.gpsd import GpsdSource
from agent.sources.health import SourceHealth
from tests.helpers.gps_fixtures import DATA, START
from tests.helpers.gpsfake import GpsFake
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until

REPLAY_TIMEOUT = 90


@pytest.fixture(autouse=True)
def fresh_gps_time():
    clock.GPS_TIME.forget()
    yield
    clock.GPS_TIME.forget()


def replay(scenario: str, stale_after: float = 30.0) -> tuple[RunningSource, SourceHealth]:
    """Run a gpsd source through one whole scenario; return what it delivered.

    gpsd is up (it has greeted a client) before the source starts, so the source connects at
    its first attempt: started first, it would back off while a loaded host starts gpsd, and
    could connect after the log was played. It keeps running until it has seen gpsd go away.
    """
    port = free_port()
    health = SourceHealth()
    source = GpsdSource("gps", health, "127.0.0.1", port, stale_after)
    with GpsFake(DATA / f"{scenario}.nmea", port) as fake, RunningSource(source) as running:
        fake.wait(timeout=REPLAY_TIMEOUT)
        assert wait_until(lambda: health.reconnects >= 1, REPLAY_TIMEOUT), \
            "the source never noticed gpsd going away"
    return running, health


def numbers(values):
    return [v for v in values if v is not None]


def test_drive_with_a_stop():
    running, health = replay("drive_with_stop")
    speeds = numbers(running.values("speed"))
    assert max(speeds) == pytest.approx(12.0, abs=0.01)
    moving, stopped = [i for i, s in enumerate(speeds) if s > 11], \
        [i for i, s in enumerate(speeds) if s == 0.0]
    assert stopped and min(moving) < min(stopped) and max(stopped) < max(moving)
    longitudes = numbers(running.values("lon"))
    assert longitudes == sorted(longitudes) and longitudes[-1] > longitudes[0]
    assert all(lat == pytest.approx(48.137154, abs=1e-5) for lat in numbers(running.values("lat")))
    assert numbers(running.values("alt")) and set(numbers(running.values("alt"))) == {519.4}
    modes = running.values("mode")
    assert set(modes) <= {2, 3} and modes[-1] == 3  # gpsd may report 2D while it settles
    assert set(running.values("hdop")) == {0.9}
    assert numbers(running.values("sats")) and max(running.values("sats")) >= 4
    assert health.rejected == {}
    assert health.reconnects >= 1  # gpsfake ended: gpsd went away and was retried
    # GPS time was seen: the system clock is this far off 2026-01-15 12:00 (the log's date)
    offset = clock.GPS_TIME.offset()
    assert offset is not None
    assert abs(offset - (START.timestamp() - _last_reading_time(running))) < 60


def _last_reading_time(running: RunningSource) -> float:
    return max(r.timestamp for r in running.readings)


def test_fix_loss_withdraws_the_position_until_the_fix_returns():
    running, health = replay("fix_loss")
    sequence = [(r.quantity, r.value) for r in running.readings
                if r.quantity in ("mode", "lat")]
    modes = [value for quantity, value in sequence if quantity == "mode"]
    assert 1 in modes and modes.index(1) > 0 and modes[-1] == 3
    fix = True
    withdrawn_when_lost = False
    for quantity, value in sequence:
        if quantity == "mode":
            fix = value >= 2
        elif value is not None:
            assert fix, "a position reported without a fix"
        elif not fix:
            withdrawn_when_lost = True
    assert withdrawn_when_lost
    last_loss = max(i for i, (q, v) in enumerate(sequence) if q == "mode" and v == 1)
    assert any(q == "lat" and v is not None for q, v in sequence[last_loss:])  # fix is back
    assert health.rejected == {}


def test_cold_start_goes_from_no_fix_to_2d_to_3d():
    running, health = replay("cold_start")
    modes = running.values("mode")
    assert modes == sorted(modes) and {2, 3} <= set(modes)  # first epochs may be lost
    fix = None
    for reading in running.readings:
        if reading.quantity == "mode":
            fix = reading.value
        elif reading.quantity == "alt" and reading.value is not None:
            assert fix == 3, "altitude without a 3D fix"
    assert numbers(running.values("alt")) and numbers(running.values("lat"))
    assert health.state["fix_mode"] == 0  # gpsd is gone at the end


def test_gpsd_absent_at_start_and_restarting():
    port = free_port()
    health = SourceHealth()
    log = DATA / "drive_with_stop.nmea"
    with RunningSource(GpsdSource("gps", health, "127.0.0.1", port, 30.0)) as running:
        assert wait_until(lambda: health.reconnects >= 2)
        assert health.state["connected"] == 0
        with GpsFake(log, port, once=False):
            assert wait_until(lambda: health.state["fix_mode"] == 3, timeout=REPLAY_TIMEOUT)
            assert health.state["connected"] == 1
        assert wait_until(lambda: health.state["connected"] == 0)
        before = len(numbers(running.values("lat")))
        assert running.values("lat")[-1] is None  # gpsd gone: no stale position sampled
        reconnects = health.reconnects
        with GpsFake(log, port, once=False):
            assert wait_until(lambda: len(numbers(running.values("lat"))) > before + 2,
                              timeout=REPLAY_TIMEOUT)
        assert health.reconnects > reconnects


def test_no_fix_for_a_while_is_flagged_stale():
    port = free_port()
    health = SourceHealth()
    source = GpsdSource("gps", health, "127.0.0.1", port, stale_after=1.0)
    with RunningSource(source), GpsFake(DATA / "fix_loss.nmea", port) as fake:
        assert wait_until(lambda: health.state["fix_mode"] == 3, timeout=REPLAY_TIMEOUT)
        assert wait_until(lambda: health.state["fix_mode"] == 1, timeout=REPLAY_TIMEOUT)
        assert wait_until(lambda: health.state["stale"] == 1, timeout=REPLAY_TIMEOUT)
        assert wait_until(lambda: health.state["fix_mode"] == 3, timeout=REPLAY_TIMEOUT)
        assert health.state["stale"] == 0
        fake.wait(timeout=REPLAY_TIMEOUT)
