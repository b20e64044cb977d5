"""Mode `bounded` (swinging door, strict): lines between its points stay within ε of every
frame, on generated traces; points are real frames; the longest span is kept."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sampling.curve import Curve
from agent.sampling.door import SwingingDoor


def run(frames: list[tuple[int, float]], epsilon: float, max_ms: int,
        flush_every: int = 0) -> list[tuple[int, float]]:
    door = SwingingDoor(epsilon, max_ms)
    points: list[tuple[int, float]] = []

    def emit(t: int, v: int | float) -> None:
        points.append((t, v))

    for position, (t, v) in enumerate(frames):
        door.observe(t, v, emit)
        if flush_every and position % flush_every == flush_every - 1:
            door.flush(emit)
    door.flush(emit)
    return points


def assert_within(frames: list[tuple[int, float]], points: list[tuple[int, float]],
                  epsilon: float) -> None:
    curve = Curve([t for t, _ in points], [v for _, v in points])
    for t, v in frames:
        distance = curve.distance(t, v)
        assert distance is not None, f"no curve at {t}"
        assert distance <= epsilon * (1 + 1e-9) + 1e-12 * max(1.0, abs(v)), (t, v, distance)


def traces(values: st.SearchStrategy[float]) -> st.SearchStrategy[list[tuple[int, float]]]:
    """Frames in time order, several per ms sometimes, gaps sometimes."""
    steps = st.one_of(st.just(0), st.integers(1, 20), st.integers(1, 5000))
    return st.lists(st.tuples(steps, values), max_size=300).map(
        lambda pairs: [(sum(step for step, _ in pairs[:n + 1]), value)
                       for n, (_, value) in enumerate(pairs)])


@settings(max_examples=300, deadline=None)
@given(traces(st.integers(-1000, 1000).map(float)), st.sampled_from([0.5, 1.0, 3.0, 50.0]),
       st.sampled_from([100, 1000, 60000]), st.integers(0, 40))
def test_every_frame_is_within_epsilon_of_the_lines(frames, epsilon, max_ms, flush_every):
    points = run(frames, epsilon, max_ms, flush_every)
    assert_within(frames, points, epsilon)


@settings(max_examples=200, deadline=None)
@given(traces(st.floats(-1e6, 1e6, allow_nan=False)), st.floats(1e-3, 1e3))
def test_float_traces_stay_within_epsilon(frames, epsilon):
    assert_within(frames, run(frames, epsilon, 60000), epsilon)


@settings(max_examples=200, deadline=None)
@given(traces(st.integers(-50, 50)), st.sampled_from([100, 1000]))
def test_points_are_frames_in_time_order_and_at_most_max_interval_apart(frames, max_ms):
    points = run(frames, 2.0, max_ms)
    assert set(points) <= set(frames)
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    stamps = [t for t, _ in frames]
    for (t0, _), (t1, _) in itertools.pairwise(points):
        if t1 - t0 > max_ms:  # only across a silence longer than max_interval
            assert not any(t0 < t < t1 for t in stamps)
    if frames:
        assert points[0] == frames[0] and points[-1][0] == frames[-1][0]


def test_a_ramp_needs_two_points_and_a_step_four():
    ramp = [(t, 0.5 * t) for t in range(0, 1000, 10)]
    assert run(ramp, 0.1, 60000) == [(0, 0.0), (990, 495.0)]
    step = [(t, 0.0 if t < 500 else 10.0) for t in range(0, 1000, 10)]
    assert run(step, 0.1, 60000) == [(0, 0.0), (490, 0.0), (500, 10.0), (990, 10.0)]


def test_textbook_counterexample_stays_within_epsilon():
    """The classic door would archive (2, -0.5) and leave the frame at t=1 1.25 away."""
    frames = [(0, 0.0), (1, 1.0), (2, -0.5), (3, -0.5)]
    assert_within(frames, run(frames, 1.0, 60000), 1.0)


def test_nan_and_infinity_are_points_of_their_own():
    frames = [(0, 1.0), (10, 2.0), (20, math.nan), (30, 4.0), (40, math.inf), (50, 6.0)]
    points = run(frames, 0.5, 60000)
    assert [t for t, _ in points] == [0, 10, 20, 30, 40, 50]


def test_late_frames_are_ignored_and_counted():
    door = SwingingDoor(1.0, 60000)
    points: list[tuple[int, float]] = []
    for t, v in [(0, 0.0), (100, 5.0), (50, 99.0), (200, 10.0)]:
        door.observe(t, v, lambda t, v: points.append((t, v)))
    assert door.late == 1


def run_windows(frames: list[tuple[int, float]], epsilon: float, max_ms: int,
                window_ms: int) -> list[tuple[int, float]]:
    """As the FrameTimeSampler drives a door: at each window end a flush to the window's last
    ms, and the next window's start point before its first frame."""
    door = SwingingDoor(epsilon, max_ms)
    points: list[tuple[int, float]] = []

    def emit(t: int, v: int | float) -> None:
        points.append((t, v))

    window_end = window_ms
    for t, v in frames:
        if t >= window_end:
            while t >= window_end:
                door.flush(emit, window_end - 1)
                window_end += window_ms
            door.window_start(window_end - window_ms, emit)
        door.observe(t, v, emit)
    door.flush(emit)
    return points


@settings(max_examples=300, deadline=None)
@given(traces(st.integers(-100, 100).map(float)), st.sampled_from([0.5, 3.0, 50.0]),
       st.sampled_from([100, 1000, 60000]), st.sampled_from([50, 1000, 7000]))
def test_window_start_and_end_points_keep_every_frame_within_epsilon(frames, epsilon, max_ms,
                                                                     window_ms):
    points = run_windows(frames, epsilon, max_ms, window_ms)
    assert_within(frames, points, epsilon)
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    for t, v in set(points) - set(frames):  # a point that is no frame holds a frame's value
        held = [value for stamp, value in frames if stamp <= t]
        if t % window_ms == 0:
            held = [value for stamp, value in frames if stamp < t]
        else:
            assert t % window_ms == window_ms - 1
        assert held and held[-1] == v, (t, v)


def test_a_flat_signal_has_points_at_the_same_two_times_in_every_window():
    frames = [(t, 7.0) for t in range(3, 3000, 10)]
    points = run_windows(frames, 1.0, 60000, 1000)
    assert points[1:-1] == [(999, 7.0), (1000, 7.0), (1999, 7.0), (2000, 7.0)]
