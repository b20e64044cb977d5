"""Verdicts on a freshly applied config from two counter snapshots."""

from __future__ import annotations

from agent.ota.verdict import HealthSnapshot, SourceCounters, problems


def snapshot(samples: int = 100, connected: bool = True, connects: int = 1,
             **sources: tuple[int, int] | tuple[int, int, int]) -> HealthSnapshot:
    """Sources as (frames, reconnects[, planned frames: default all])."""
    return HealthSnapshot({name: _counters(*counts) for name, counts in sources.items()},
                          samples, connected, connects)


def test_a_delivering_source_and_growing_samples_are_healthy():
    before = snapshot(100, can0=(50, 0))
    assert problems(before, snapshot(140, can0=(90, 0)), uplink_changed=False) == []


def test_a_quiet_bus_is_not_a_failure():
    """Ignition off: no frames, but the bus opened fine."""
    assert problems(snapshot(can0=(50, 0)), snapshot(can0=(50, 0)),
                    uplink_changed=False) == []


def test_a_bus_that_cannot_be_opened_fails():
    found = problems(snapshot(can0=(50, 0)), snapshot(140, can0=(90, 0), can1=(0, 3)),
                     uplink_changed=False)
    assert found == ["source can1 got no frame and failed to open its bus 3 times"]


def test_planned_frames_without_samples_fail():
    found = problems(snapshot(100, can0=(50, 0)), snapshot(100, can0=(80, 0)),
                     uplink_changed=False)
    assert found == ["30 frames of planned messages arrived but no signal was sampled (does "
                     "the DBC match the bus?)"]


def test_planned_messages_that_do_not_come_are_not_a_failure():
    """The plan samples charging messages while the car drives: other frames arrive."""
    assert problems(snapshot(100, can0=(50, 0, 10)), snapshot(100, can0=(80, 0, 10)),
                    uplink_changed=False) == []


def test_the_uplink_is_judged_only_when_the_update_changed_it():
    down = snapshot(200, connected=False, connects=0, can0=(80, 0))
    assert problems(snapshot(can0=(50, 0)), down, uplink_changed=False) == []
    assert problems(snapshot(can0=(50, 0)), down, uplink_changed=True) == [
        "the changed uplink never connected to its broker"]


def _counters(frames: int, reconnects: int, planned: int | None = None) -> SourceCounters:
    return SourceCounters(frames, reconnects, frames if planned is None else planned)
