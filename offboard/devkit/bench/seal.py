"""Figure 3: seal time of a 48,000-sample minute (encode + compress + sign, `Batcher.seal`).

The synthetic minute of figure 2 is put in the ring (not timed) and sealed (timed), over and
over; the first seal (dictionary, warm-up) is not counted. The same-run baseline is what a
naive uploader pays for the same minute: JSON rows, gzip, and the same Ed25519 signature.
"""

from __future__ import annotations

import gzip
import json
import time

from devkit.bench import synthetic
from devkit.bench.common import Figure, median

TARGET_MS = 5.0


def run(quick: bool) -> Figure:
    repeats = 7 if quick else 31
    first, second = synthetic.minutes(2)
    signer, _ = synthetic.signer()
    ring = synthetic.ring_for(first)
    batcher = synthetic.batcher(first, ring, signer)
    synthetic.fill(ring, first)
    batcher.seal(synthetic.T0_MS, synthetic.T0_MS + 60_000)
    wall, cpu = [], []
    t0 = synthetic.T0_MS
    for _ in range(repeats):
        t0 += 60_000
        synthetic.fill(ring, second, t0)
        started, started_cpu = time.perf_counter(), time.process_time()
        sealed = batcher.seal(t0, t0 + 60_000)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    baseline = [_json_gzip_sign(second, signer, t0) for _ in range(max(3, repeats // 4))]
    value_ms, baseline_ms = median(wall) * 1000, median(baseline) * 1000
    return Figure(
        key="seal_ms", title="Seal a 48,000-sample minute (encode + zstd + Ed25519)",
        unit="ms", value=round(value_ms, 2), baseline=round(baseline_ms, 1),
        baseline_name="JSON rows + gzip + the same signature", ratio=round(
            baseline_ms / value_ms, 1),
        target=f"≤ {TARGET_MS:g} ms", met=value_ms <= TARGET_MS, runs=repeats,
        details={"samples": sealed.samples, "cpu_ms_median": round(median(cpu) * 1000, 2),
                 "min_ms": round(min(wall) * 1000, 2)})


def _json_gzip_sign(data: synthetic.Minute, signer, t0_ms: int) -> float:  # noqa: ANN001
    signals = data.plan.signals
    started = time.perf_counter()
    rows = [{"t": t0_ms + second * 1000, "signal": signals[index].key,
             "value": value * signals[index].scale + signals[index].offset}
            for second, row in enumerate(data.values) for index, value in enumerate(row)]
    signer.sign(gzip.compress(json.dumps(rows).encode()))
    return time.perf_counter() - started
