"""agent/runtime/watchdog.py: systemd's watchdog is fed only while every loop beats in time."""

from __future__ import annotations

from agent.runtime.watchdog import Liveness, WatchdogFeeder


class FakeNotifier:
    def __init__(self, interval: float | None) -> None:
        self.watchdog_interval = interval
        self.pings = 0

    def watchdog(self) -> None:
        self.pings += 1


def test_a_loop_past_its_allowance_is_overdue_until_it_beats_or_retires():
    liveness = Liveness()
    liveness.beat("uplink", allowance=-1.0)  # its deadline has passed
    liveness.beat("source can0", allowance=60.0)

    assert liveness.overdue() == ["uplink"]
    liveness.beat("uplink")
    assert liveness.overdue() == []
    liveness.beat("source replay", allowance=-1.0)
    liveness.retire("source replay")  # a replay that finished on purpose
    assert liveness.overdue() == []


def test_the_watchdog_is_not_fed_while_a_loop_is_overdue(caplog):
    liveness = Liveness()
    notifier = FakeNotifier(interval=10.0)
    feeder = WatchdogFeeder(notifier, liveness)  # type: ignore[arg-type]
    liveness.beat("sampler", allowance=-1.0)

    feeder.tick()
    feeder.tick()

    assert notifier.pings == 0
    assert [r.message for r in caplog.records].count(
        "not feeding the watchdog: sampler stopped responding") == 1  # said once, not per tick
    liveness.beat("sampler")
    feeder.tick()
    assert notifier.pings == 1


def test_pings_come_at_half_the_interval_and_never_without_a_watchdog():
    liveness = Liveness()
    notifier = FakeNotifier(interval=3600.0)
    feeder = WatchdogFeeder(notifier, liveness)  # type: ignore[arg-type]
    feeder.tick()
    feeder.tick()  # well within half an hour of the first ping
    assert notifier.pings == 1

    unwatched = FakeNotifier(interval=None)  # the unit runs without WatchdogSec
    WatchdogFeeder(unwatched, liveness).tick()  # type: ignore[arg-type]
    assert unwatched.pings == 0
