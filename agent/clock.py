"""Where wall-clock time comes from and whether to trust it, tagged on every batch.

A telematics unit often boots with no network and a drifting or unset RTC, so every batch says
which clock stamped it: `ntp` (kernel clock synchronised), `rtc` (not synchronised: timestamps
may be far off), `gps` (corrected from GPS time), or `replay` (time taken from a recorded log).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

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


def wall_clock_source() -> str:
    return NTP if kernel_clock_synchronised() else RTC
