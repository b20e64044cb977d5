"""The periodic fast path of `encode_records` (a transpose instead of a sort) against the
general path, on random ring slices: periodic ones, and ones that are almost periodic (a tick
in another order, a record missing, a signal twice a tick, a ring that overwrote part of a
tick, signals outside the plan, a `stats` signal)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import agent.output.batch as batch
from agent.output.batch import encode_records, kind_lookup, periodic_groups, sorted_groups
from agent.sampling.ring import Field, RingSlice
from agent.wire.body import SeriesKind

LAST_KINDS = (SeriesKind.INT_LAST, SeriesKind.FLOAT_LAST)


@st.composite
def ring_slices(draw: st.DrawFn) -> tuple[RingSlice, dict[int, SeriesKind], str]:
    """A slice of ticks x signals records, perturbed in one way or not at all."""
    width, ticks = draw(st.integers(1, 30)), draw(st.integers(1, 12))
    row = draw(st.lists(st.integers(0, 65535), min_size=width, max_size=width, unique=True))
    planned = draw(st.lists(st.sampled_from(row), unique=True, max_size=width))
    kinds = {signal: draw(st.sampled_from(LAST_KINDS)) for signal in planned}
    perturbation = draw(st.sampled_from(
        ["none", "none", "swapped", "missing", "twice", "rotated", "stats"]))
    signal = np.tile(np.array(row, dtype=np.uint16), ticks)
    if perturbation == "swapped" and width > 1:  # one tick in another order
        tick = draw(st.integers(0, ticks - 1)) * width
        signal[tick:tick + 2] = signal[tick:tick + 2][::-1].copy()
    elif perturbation == "missing":
        signal = np.delete(signal, draw(st.integers(0, len(signal) - 1)))
    elif perturbation == "twice" and width > 1:
        signal = np.tile(np.array([row[0], *row[:-1]], dtype=np.uint16), ticks)
    elif perturbation == "rotated":  # the ring overwrote the first records of the window
        signal = signal[draw(st.integers(0, len(signal) - 1)):]
    elif perturbation == "stats" and planned:
        kinds[planned[0]] = draw(st.sampled_from([SeriesKind.INT_STATS, SeriesKind.FLOAT_STATS]))
    count = len(signal)
    # Times: the tick's own for every record (one shared time column), or each record its own.
    if draw(st.booleans()):
        times = np.repeat(np.arange(ticks, dtype=np.int64) * 1000, width)[:count]
    else:
        times = np.array(draw(st.lists(st.integers(-2 ** 40, 2 ** 40), min_size=count,
                                       max_size=count)), dtype=np.int64)
    values = np.array(draw(st.lists(st.one_of(st.integers(-100, 100),
                                              st.integers(-2 ** 63, 2 ** 63 - 1)),
                                    min_size=count, max_size=count)), dtype=np.int64)
    fields = np.array(draw(st.lists(st.sampled_from(list(Field)), min_size=count,
                                    max_size=count)), dtype=np.uint8)
    return RingSlice(times, signal, fields, values), kinds, perturbation


@settings(max_examples=200, deadline=None)
@given(ring_slices(), st.integers(0, 2 ** 42))
def test_the_periodic_path_groups_as_the_sort_does(case, t0_ms):
    records, kinds, perturbation = case
    lookup = kind_lookup(kinds)
    fast = periodic_groups(records, lookup, t0_ms)
    last, stats = sorted_groups(records, lookup, t0_ms)
    if perturbation == "none" and kinds:
        assert fast is not None  # the usual window takes the fast path
    if fast is None:
        return
    assert stats is None
    for got, want in zip(fast, last, strict=True):
        assert got.tolist() == want.tolist()


@settings(max_examples=100, deadline=None)
@given(ring_slices(), st.integers(0, 2 ** 42))
def test_the_periodic_path_seals_the_same_columns(case, t0_ms):
    records, kinds, _ = case
    lookup = kind_lookup(kinds)
    fast, fast_samples = encode_records(records, kinds, t0_ms, lookup)
    original = batch.periodic_groups
    batch.periodic_groups = lambda *_: None
    try:
        general, general_samples = encode_records(records, kinds, t0_ms, lookup)
    finally:
        batch.periodic_groups = original
    assert fast_samples == general_samples
    assert fast.sig() == general.sig()
    assert fast.time_bases == general.time_bases
    assert fast.series() == general.series()
