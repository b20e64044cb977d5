"""Mode `change`: a sample at the frame time whenever a signal's value changes by more than a
deadband, and a heartbeat sample after a silence.

The rule, per signal, over its frames in time order (docs/sampling.md states it for the oracle
and the backend):
- the first frame is sampled;
- a frame is sampled when |raw - raw of the last sample| x |scale| > deadband (physical units;
  with deadband 0, any change; NaN differs from everything but NaN);
- a frame is sampled when it comes `heartbeat` or more after the last sample, changed or not;
- a frame stamped before the signal's previous frame is late and ignored (counted);
- at each window start t0 (after the first), the value held at t0 (the last frame before it) is
  a sample stamped t0, if that frame came at most `heartbeat` before t0 (`window_start`). It
  stands in for the heartbeat: every quiet signal of a window then shares the time column [0],
  which costs next to nothing on the wire, where a heartbeat at its own frame time cost 2-3.
The comparison is with the last *sample*, not the previous frame, so a slow drift below the
deadband per frame is still sampled once it has drifted by more than the deadband.
"""

from __future__ import annotations

import math


class ChangeFilter:
    """One signal's `change` rule; `observe` says whether a frame is a sample."""

    __slots__ = (
        "_deadband",
        "_frame_at",
        "_frame_value",
        "_heartbeat",
        "_sampled_at",
        "_scale",
        "_value",
        "late",
    )

    def __init__(self, deadband: float, scale: float, heartbeat_ms: int) -> None:
        self._deadband = deadband
        self._scale = abs(scale)
        self._heartbeat = heartbeat_ms
        self._value: int | float | None = None
        self._sampled_at = 0
        self._frame_at = -(1 << 62)
        self._frame_value: int | float = 0
        self.late = 0

    def observe(self, time_ms: int, value: int | float) -> bool:
        if time_ms < self._frame_at:
            self.late += 1
            return False
        self._frame_at = time_ms
        self._frame_value = value
        last = self._value
        if last is None or time_ms - self._sampled_at >= self._heartbeat \
                or changed(last, value, self._deadband, self._scale):
            self._value = value
            self._sampled_at = time_ms
            return True
        return False

    def window_start(self, t0_ms: int) -> int | float | None:
        """The value held at window start `t0_ms`, now the last sample; None (no sample) before
        the first frame, or when the last frame came more than a heartbeat before t0."""
        if self._value is None or not 0 < t0_ms - self._frame_at <= self._heartbeat:
            return None
        self._value = self._frame_value
        self._sampled_at = t0_ms
        return self._value


def changed(last: int | float, value: int | float, deadband: float, scale: float) -> bool:
    """Whether `value` differs from `last` by more than `deadband` (raw values, |scale|)."""
    if value == last:
        return False
    if value != value or last != last:  # NaN: a change unless both are NaN
        return not (value != value and last != last)
    if not deadband:
        return True
    difference = abs(value - last) * scale
    # inf - inf is NaN: a change between infinities of the same sign was caught above.
    return math.isnan(difference) or difference > deadband
