"""Figure 2: payload bytes per sample, signed envelope included, against row formats.

Two data sets: a synthetic minute of 800 signals at 1 Hz (offboard/devkit/bench/synthetic.py),
sealed as the second batch of a run (the dictionary travels in the first batch of a boot: its
cost is spread over an hour of driving, one boot a day, and added), and the
bundled drive replayed through the real FrameStore → Sampler → Ring → Batcher path with the
shipped sampling rules. Baselines, from the very same samples: one JSON object per sample
({"t": ms, "signal": key, "value": physical value}, in time order as a logger writes them)
gzip'ed, and msgpack [t, key, value] rows zlib'ed.

Parked: a real agent (build_agent, one bus, every signal) takes the drive's first two minutes,
then its bus goes silent for PARKED_HOURS of event time (virtual time: the sampler is moved
on as the daemon's idle beat moves it). The bytes of the batches it spools while parked,
scaled to a month at 24 h a day, against the same agent sealing every window
(`[batch] heartbeat = 0`, as before #26).
"""

from __future__ import annotations

import gzip
import json
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import msgpack

from agent.output.batch import Batcher, open_batch
from agent.wire.body import BatchBody
from agent.wire.keys import key_id
from devkit.bench import synthetic
from devkit.bench.common import DRIVE_LOG, VEHICLE_DBC, Figure, drive_frames

DRIVING_HOURS_PER_MONTH = 30.0
# The dictionary travels in band once per boot (and per plan change): its cost is spread over
# a day's driving hour of batches, as if the agent started once a day.
DICTIONARY_EVERY = 60
PARKED_HOURS = 6
PARKED_HOURS_PER_MONTH = 24 * 30


def run(quick: bool) -> Figure:
    synthetic_bps, synthetic_rows = _synthetic()
    drive = _drive()
    parked = _parked_bytes_per_hour(heartbeat=3600, hours=PARKED_HOURS)
    every_window = _parked_bytes_per_hour(heartbeat=0, hours=1)
    json_bps = _json_gzip(synthetic_rows) / len(synthetic_rows)
    msgpack_bps = _msgpack_zlib(synthetic_rows) / len(synthetic_rows)
    ratio = json_bps / synthetic_bps
    samples_per_hour = synthetic.SIGNALS * 3600
    return Figure(
        key="payload_bytes_per_sample", title="Payload per sample (800 signals at 1 Hz)",
        unit="B/sample", value=round(synthetic_bps, 4), baseline=round(json_bps, 3),
        baseline_name="JSON rows + gzip", ratio=round(ratio, 1),
        target="≤ 0.40 B/sample with the signed envelope, ≥ 30x smaller than JSON+gzip",
        met=synthetic_bps <= 0.40 and ratio >= 30, runs=1,
        details={
            "msgpack_zlib_bytes_per_sample": round(msgpack_bps, 3),
            "ratio_vs_msgpack_zlib": round(msgpack_bps / synthetic_bps, 1),
            "mb_per_month_1h_a_day": round(
                synthetic_bps * samples_per_hour * DRIVING_HOURS_PER_MONTH / 1e6, 2),
            "json_gzip_mb_per_month_1h_a_day": round(
                json_bps * samples_per_hour * DRIVING_HOURS_PER_MONTH / 1e6, 1),
            "drive_bytes_per_sample": round(drive["agent"], 4),
            "drive_json_gzip_bytes_per_sample": round(drive["json"], 3),
            "drive_msgpack_zlib_bytes_per_sample": round(drive["msgpack"], 3),
            "drive_samples": int(drive["samples"]),
            "drive_signals": int(drive["signals"]),
            "drive_mb_per_month_1h_a_day": round(
                drive["bytes_per_second"] * 3600 * DRIVING_HOURS_PER_MONTH / 1e6, 2),
            "parked_mb_per_month_24h_a_day": round(
                parked * PARKED_HOURS_PER_MONTH / 1e6, 3),
            "parked_every_window_mb_per_month_24h_a_day": round(
                every_window * PARKED_HOURS_PER_MONTH / 1e6, 2),
            "parked_hours_simulated": PARKED_HOURS,
        })


def _synthetic() -> tuple[float, list[tuple[int, str, float]]]:
    first, second = synthetic.minutes(2)
    signer, public = synthetic.signer()
    ring = synthetic.ring_for(first)
    batcher = synthetic.batcher(first, ring, signer)
    synthetic.fill(ring, first)
    with_dictionary = batcher.seal(synthetic.T0_MS, synthetic.T0_MS + 60_000)
    synthetic.fill(ring, second, synthetic.T0_MS + 60_000)
    steady = batcher.seal(synthetic.T0_MS + 60_000, synthetic.T0_MS + 120_000)
    dictionary_bytes = len(with_dictionary.envelope) - len(steady.envelope)
    amortised = len(steady.envelope) + dictionary_bytes / DICTIONARY_EVERY
    body = open_batch(steady.envelope, {key_id(public): public})
    return amortised / steady.samples, _rows([body], first.plan.signals)


def _rows(bodies: Sequence[BatchBody], signals: Sequence) -> list[tuple[int, str, float]]:  # type: ignore[type-arg]
    rows = []
    for body in bodies:
        for series in sorted(body.series, key=lambda item: item.signal):
            signal = signals[series.signal]
            for position, at in enumerate(series.times_ms):
                for column in series.columns[:3]:  # value, or min/max/sum
                    rows.append((at, signal.key, column[position] * signal.scale
                                 + signal.offset))
    rows.sort(key=lambda row: row[0])  # time order, as a logger writes them (stable sort)
    return rows


def _json_gzip(rows: list[tuple[int, str, float]]) -> int:
    text = json.dumps([{"t": t, "signal": s, "value": v} for t, s, v in rows])
    return len(gzip.compress(text.encode()))


def _msgpack_zlib(rows: list[tuple[int, str, float]]) -> int:
    return len(zlib.compress(msgpack.packb([[t, s, v] for t, s, v in rows])))


def _drive() -> dict[str, float]:
    from agent.config.schema import SamplingConfig, SignalRule
    from agent.decoding.dbc import load_dbc
    from agent.decoding.frames import FrameStore
    from agent.sampling.plan import build_plan
    from agent.sampling.ring import Ring
    from agent.sampling.sampler import Sampler
    from agent.sources.health import SourceHealth

    database = load_dbc([VEHICLE_DBC]).database
    rules = (SignalRule("can0.*"), SignalRule("can0.ESP_VehicleSpeed.VehicleSpeed", mode="stats"),
             SignalRule("can0.BMS_Pack.PackCurrent", mode="stats"))
    plan = build_plan(SamplingConfig(signals=rules), {"can0": database})
    ring = Ring.for_memory(16, frozenset(s.index for s in plan.signals if s.is_float))
    signer, public = synthetic.signer()
    batcher: Batcher = synthetic.batcher(synthetic.Minute(plan, []), ring, signer)
    store = FrameStore(database, plan.for_source("can0"), SourceHealth())
    envelopes: list[bytes] = []
    samples = [0]

    def on_window(t0_ms: int, t1_ms: int) -> None:
        sealed = batcher.seal(t0_ms, t1_ms)
        envelopes.append(sealed.envelope)
        samples[0] += sealed.samples

    sampler = Sampler(plan, ring, {"can0": store}, 60_000, on_window)
    first = last = 0.0
    for frame in drive_frames():
        first = first or frame.timestamp
        last = frame.timestamp
        sampler.advance(frame.timestamp)
        store.accept(frame)
    sampler.finish()
    keys = {key_id(public): public}
    bodies = [open_batch(envelope, keys) for envelope in envelopes]
    rows = _rows(bodies, plan.signals)
    total = sum(map(len, envelopes))
    return {"agent": total / samples[0], "json": _json_gzip(rows) / len(rows),
            "msgpack": _msgpack_zlib(rows) / len(rows), "samples": samples[0],
            "signals": len(plan.signals), "bytes_per_second": total / (last - first),
            "log": str(DRIVE_LOG.name)}


def _parked_bytes_per_hour(heartbeat: int, hours: int) -> float:
    """Bytes a real agent spools per hour of silent buses after a short drive."""
    from devkit.bench.ingest import _make_agent

    with tempfile.TemporaryDirectory(prefix="bench-parked-") as scratch:
        agent = _make_agent(Path(scratch), [f"bench-parked-{heartbeat}"],
                            extra=f"[batch]\nheartbeat = {heartbeat}\n")
        try:
            store, sampler = agent.pipeline.stores["can0"], agent.sampler
            first = last = None
            for frame in drive_frames():
                first = first or frame.timestamp
                if frame.timestamp - first >= 120:
                    break
                last = frame.timestamp
                sampler.advance(frame.timestamp)
                store.accept(frame)
            assert last is not None
            # Past the last stale sample (10 s) and the window that holds it: parked from here.
            parked_from = (int(last) // 60 + 2) * 60
            for second in range(int(last) + 1, parked_from + 1):
                sampler.advance(second)
            before = {b.seq for b in agent.parts.spool.next_batches(100_000)}
            for second in range(parked_from + 1, parked_from + hours * 3600 + 1):
                sampler.advance(second)
            parked = [len(b.envelope) for b in agent.parts.spool.next_batches(100_000)
                      if b.seq not in before]
        finally:
            agent.parts.spool.close()
    return sum(parked) / hours
