"""Which clock a batch names: kernel synchronisation first, then agreement with GPS time."""

from __future__ import annotations

import time

from agent.runtime import clock


def test_ntp_wins_then_a_recent_gps_fix_then_rtc():
    assert clock.choose_clock(True, 500.0) == clock.NTP
    assert clock.choose_clock(False, 0.4) == clock.GPS
    assert clock.choose_clock(None, -3600.0) == clock.GPS
    assert clock.choose_clock(False, None) == clock.RTC


def test_gps_reference_remembers_the_offset_of_the_newest_fix():
    reference = clock.GpsTimeReference()
    assert reference.offset() is None
    now = time.time()
    reference.observe(now + 12.5, now)
    reference.observe(now + 0.25, now)
    assert reference.offset() == 0.25
    reference.forget()
    assert reference.offset() is None
