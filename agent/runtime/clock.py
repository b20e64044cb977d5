"""Where wall-clock time comes from and whether to trust it, tagged on every batch.

A telematics unit often boots with no network and a drifting or unset RTC, so every batch says
which clock stamped it: `ntp` (kernel clock synchronised), `rtc` (not synchronised: timestamps
may be far off), `gps` (not synchronised, so the batch's times were corrected by the offset of
the system clock from GPS time at a recent fix), or `replay` (time taken from a recorded log).

A gpsd source reports the GPS time of each fix to `GPS_TIME`; the system clock is one per
process, and so is the reference that vouches for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger(__name__)

NTP = "ntp"
RTC = "rtc"
GPS = "gps"
REPLAY = "replay"

_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: modes, then fields; the tail is padding we never read.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 256)]


def kernel_clock_synchronised() -> bool | None:
    """True/False from adjtimex(2); None where the call is not available."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        state = libc.adjtimex(ctypes.byref(_Timex()))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


GPS_FRESH_FOR = 300.0  # seconds: how long one fix vouches for the (drifting) system clock


class GpsTimeReference:
    """The offset of the system clock from GPS time at the newest fix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observed: tuple[float, float] | None = None  # (monotonic, gps - system seconds)

    def observe(self, gps_time: float, system_time: float) -> None:
        with self._lock:
            self._observed = (time.monotonic(), gps_time - system_time)

    def offset(self) -> float | None:
        """GPS minus system time in seconds, if a fix was seen in the last GPS_FRESH_FOR s."""
        with self._lock:
            observed = self._observed
        if observed is None or time.monotonic() - observed[0] > GPS_FRESH_FOR:
            return None
        return observed[1]

    def forget(self) -> None:
        with self._lock:
            self._observed = None


GPS_TIME = GpsTimeReference()


def wall_clock_source() -> str:
    return choose_clock(kernel_clock_synchronised(), GPS_TIME.offset())


def gps_correction_ms() -> int | None:
    """Milliseconds to add to system times to get GPS time, while the kernel clock is not
    synchronised and a fix is recent; None otherwise (no correction)."""
    if kernel_clock_synchronised():
        return None
    offset = GPS_TIME.offset()
    return None if offset is None else round(offset * 1000)


def choose_clock(synchronised: bool | None, gps_offset: float | None) -> str:
    """`ntp` when the kernel says so; else `gps` when a recent fix gives the correction; else
    `rtc`."""
    if synchronised:
        return NTP
    if gps_offset is not None:
        return GPS
    return RTC
