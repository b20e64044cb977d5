"""Mode `bounded`: the fewest points (greedily, in one pass) such that straight lines between
them stay within ε of every frame's value; swinging-door trending, with a strict bound.

Swinging-door trending (Bristol, 1990; public) keeps the last archived point A and, as frames
arrive, narrows a cone of slopes from A: each frame (t, v) allows the slopes that pass within
ε of it, [(v - ε - vA) / (t - tA), (v + ε - vA) / (t - tA)]. The textbook version archives the
previous frame once the cone closes; but the line from A to that frame's *own* value need not
lie in the cone, so a frame in between can end up almost 2ε away. Here a frame Q extends the
segment only if the slope A→Q lies in the cone of the frames before it; then the line A→Q is
within ε of every one of them, and Q becomes the candidate end. Otherwise the candidate end P
is archived, the cone restarts from P, and Q is the first frame of the new segment. Archived
points are real frames with their exact raw values (integers stay integers on the wire).

A point is also archived so that two consecutive points are at most `max_interval` apart while
frames keep coming: a frame more than `max_interval` after A first archives the candidate end;
a frame that follows a silence longer than that is archived itself, so two consecutive points
further apart than `max_interval` bound a stretch without frames (not to be interpolated).
At every window seal `flush` archives the candidate end, so each batch is complete up to its
last frame (moved to the window's last ms when the bound allows); `window_start` then adds the
value held at the next window's start as a point at t0 (docs/sampling.md: quiet signals share
one time column). O(1) time and memory per frame; docs/sampling.md says why not
Douglas-Peucker.

Frames of the same millisecond as A with another value (the wire's resolution) archive a
vertical step: both points at that time. A frame stamped before the previous one is late and
ignored (counted).
"""

from __future__ import annotations

from collections.abc import Callable

Emit = Callable[[int, int | float], None]
# ε is narrowed by this factor so that float rounding in the slopes never lets a frame land
# just outside ε (a few more points at worst; the bound itself is exact).
_MARGIN = 1 - 2**-30


class SwingingDoor:
    """One signal's `bounded` sampler over raw values; `observe` emits archived points."""

    __slots__ = (
        "_anchor_t",
        "_anchor_v",
        "_epsilon",
        "_held_t",
        "_held_v",
        "_high",
        "_low",
        "_max",
        "late",
    )

    def __init__(self, epsilon: float, max_interval_ms: int) -> None:
        self._epsilon = epsilon * _MARGIN
        self._max = max_interval_ms
        self._anchor_t: int | None = None
        self._anchor_v: int | float = 0
        self._held_t: int | None = None  # the candidate end: a frame after A, not archived
        self._held_v: int | float = 0
        self._low = float("-inf")
        self._high = float("inf")
        self.late = 0

    def observe(self, t: int, v: int | float, emit: Emit) -> None:
        anchor = self._anchor_t
        if anchor is None:
            self._archive(t, v, emit)
            return
        held = self._held_t
        if t < (anchor if held is None else held):
            self.late += 1
            return
        # x - x is 0 for every finite x, NaN for NaN and ±inf: no line through those.
        if held is not None and (t - anchor > self._max or v - v != 0):
            self._archive_held(emit)
            anchor, held = self._anchor_t, None
        va = self._anchor_v
        assert anchor is not None
        if t == anchor or t - anchor > self._max or v - v != 0 or va - va != 0:
            # a step within the anchor's ms, a silence longer than max_interval, or a value
            # no line can reach: the frame is a point of its own
            if not (t == anchor and v == va):
                self._archive(t, v, emit)
            return
        span = t - anchor
        if held is not None and not self._low <= (v - va) / span <= self._high:
            self._archive_held(emit)  # the candidate end P becomes A; Q starts a segment
            va = self._anchor_v
            span = t - held
            held = None
            if span == 0:
                self._archive(t, v, emit)
                return
        epsilon = self._epsilon
        low = (v - epsilon - va) / span
        high = (v + epsilon - va) / span
        if held is not None:
            low = max(low, self._low)
            high = min(high, self._high)
        self._low, self._high = low, high
        self._held_t, self._held_v = t, v

    def window_start(self, t0_ms: int, emit: Emit) -> None:
        """A point at window start `t0_ms` with the value held there (the last frame's), which
        becomes the anchor. No frame lies between the last frame and t0, so the bound holds;
        no point before the first frame, or after a silence longer than `max_interval`."""
        if self._held_t is not None:
            self._archive_held(emit)
        anchor = self._anchor_t
        if anchor is not None and 0 < t0_ms - anchor <= self._max:
            self._archive(t0_ms, self._anchor_v, emit)

    def flush(self, emit: Emit, last_ms: int | None = None) -> None:
        """Archive the candidate end (a window seals: its batch holds every point so far).

        With `last_ms` (the window's last millisecond), the end is moved there with the same
        value when the line from A still lies in the cone: it is then within ε of every frame
        since A, and a flat signal's points fall on the same two times in every window (its
        start and its last ms), one time column shared by all of them on the wire.
        """
        held = self._held_t
        if held is None:
            return
        anchor = self._anchor_t
        assert anchor is not None
        if last_ms is not None and held < last_ms and last_ms - anchor <= self._max \
                and self._low <= (self._held_v - self._anchor_v) / (last_ms - anchor) \
                <= self._high:
            self._archive(last_ms, self._held_v, emit)
        else:
            self._archive_held(emit)

    def _archive_held(self, emit: Emit) -> None:
        assert self._held_t is not None
        self._archive(self._held_t, self._held_v, emit)

    def _archive(self, t: int, v: int | float, emit: Emit) -> None:
        emit(t, v)
        self._anchor_t, self._anchor_v = t, v
        self._held_t = None
        self._low = float("-inf")
        self._high = float("inf")
