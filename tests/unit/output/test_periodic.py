"""The periodic fast path of `encode_records` (a transpose instead of a sort) against the
general path, on random ring slices: periodic ones (with signals outside the plan, a `stats`
signal's four records a tick), and ones that are almost periodic (a tick in another order, a
record missing, a signal twice a tick, a ring that overwrote part of a tick, a `stats` signal
with one record a tick)."""

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
    """A slice of ticks x records-a-tick, perturbed in one way or not at all."""
    width, ticks = draw(st.integers(1, 30)), draw(st.integers(1, 12))
    row = draw(st.lists(st.integers(0, 65535), min_size=width, max_size=width, unique=True))
    planned = draw(st.lists(st.sampled_from(row), unique=True, max_size=width))
    kinds = {signal: draw(st.sampled_from(LAST_KINDS)) for signal in planned}
    perturbation = draw(st.sampled_from(
        ["none", "none", "stats", "swapped", "missing", "twice", "rotated", "stats once"]))
    row_fields = [Field.VALUE] * width
    if perturbation == "stats" and planned:  # a stats signal: MIN, MAX, SUM, COUNT a tick
        stats_signal = draw(st.sampled_from(planned))
        kinds[stats_signal] = draw(st.sampled_from([SeriesKind.INT_STATS,
                                                    SeriesKind.FLOAT_STATS]))
        at = row.index(stats_signal)
        row[at:at + 1] = [stats_signal] * 4
        row_fields[at:at + 1] = [Field.MIN, Field.MAX, Field.SUM, Field.COUNT]
        width += 3
    signal = np.tile(np.array(row, dtype=np.uint16), ticks)
    fields = np.tile(np.array(row_fields, dtype=np.uint8), ticks)
    if perturbation == "swapped" and width > 1:  # one tick in another order
        tick = draw(st.integers(0, ticks - 1)) * width
        signal[tick:tick + 2] = signal[tick:tick + 2][::-1].copy()
    elif perturbation == "missing":
        keep = np.arange(len(signal)) != draw(st.integers(0, len(signal) - 1))
        signal, fields = signal[keep], fields[keep]
    elif perturbation == "twice" and width > 1:
        signal = np.tile(np.array([row[0], *row[:-1]], dtype=np.uint16), ticks)
    elif perturbation == "rotated":  # the ring overwrote the first records of the window
        start = draw(st.integers(0, len(signal) - 1))
        signal, fields = signal[start:], fields[start:]
    elif perturbation == "stats once" and planned:  # one record a tick, any field
        kinds[planned[0]] = draw(st.sampled_from([SeriesKind.INT_STATS,
                                                  SeriesKind.FLOAT_STATS]))
        fields = np.array(draw(st.lists(st.sampled_from(list(Field)), min_size=len(signal),
                                        max_size=len(signal))), dtype=np.uint8)
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
    return RingSlice(times, signal, fields, values), kinds, perturbation


@settings(max_examples=200, deadline=None)
@given(ring_slices(), st.integers(0, 2 ** 42))
def test_the_periodic_path_groups_as_the_sort_does(case, t0_ms):
    records, kinds, perturbation = case
    lookup = kind_lookup(kinds)
    fast = periodic_groups(records, lookup, t0_ms)
    general = sorted_groups(records, lookup, t0_ms)
    if perturbation in ("none", "stats") and kinds:
        assert fast is not None  # the usual window takes the fast path
    if fast is None:
        return
    (last, stats), (want_last, want_stats) = fast, general
    for got, want in zip(last, want_last, strict=True):
        assert got.tolist() == want.tolist()
    assert (stats is None) == (want_stats is None)
    if stats is not None:
        for got, want in zip(stats, want_stats, strict=True):
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
