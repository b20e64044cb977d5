"""One backend worker's CPU per batch, in process: `tools/bench --only fleet-worker`.

What `--only fleet` measures across processes and a broker, without them: the CPU one worker
spends on a batch from envelope to Parquet (verify, vehicle binding, decode, the data set's
tables, the flushes), for the two shapes a fleet sends. The fleet's sizing (issue #27): 800
signals once a minute, 800 one-sample series per batch, where the cost is per series; and the
agent's default plan, 800 signals at 1 Hz (48,000 samples per batch), where it is per sample.
Batches are made by tools/fleet-sim's vehicles (the agent's own Batcher, a key each) and
sealed before timing; the median of the runs is reported. No baseline: the target is the
absolute one of the issue, 10,000 cars (133,000 samples/s at 800 per car and minute) on one
worker, i.e. one core.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from fleet.backend import Backend, _decode, load_keyring
from fleet.dataset import DatasetWriter

from devkit.bench.common import Figure
from devkit.fleet_sim import fleet_messages, fleet_plan, make_vehicles

FLEET_RATE = 10_000 * 800 / 60  # samples/s of 10,000 cars at 800 samples a minute


def _samples_per_cpu_second(period_s: int, vehicles: int, minutes: int, runs: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        shared = fleet_plan(800, period_s, 2)
        fleet = make_vehicles(vehicles, shared, folder / "keys", "bench-")
        messages = list(fleet_messages(fleet, shared, "bench", minutes, 1_790_000_000_000))
        keys = load_keyring([f"*={folder / 'keys'}"])
        rates = []
        for run in range(runs):
            backend = Backend(*keys)
            for message in messages:  # the retained dictionaries, as a worker reads first
                if message.retain:
                    backend.receive_dictionary(message.payload)
            batches = [m for m in messages if not m.retain]
            writer = DatasetWriter(folder / f"data-{run}", "bench")
            started = time.process_time()
            for message in batches:
                receipt = backend.receive(message.payload)
                if receipt.ok and receipt.body is not None and not receipt.duplicate:
                    writer.add_received(receipt.body)
                    _decode(backend, backend.admit(receipt.body, time.monotonic()), None,
                            writer)
            writer.flush()
            spent = time.process_time() - started
            if backend.decoded != len(batches):
                raise RuntimeError(f"decoded {backend.decoded} of {len(batches)} batches")
            rates.append(sum(m.samples for m in batches) / spent)
        return statistics.median(rates)


def run(quick: bool) -> Figure:
    runs = 3 if quick else 5
    per_minute = _samples_per_cpu_second(60, 20 if quick else 50, 3, runs)
    per_second = _samples_per_cpu_second(1, 5, 2, runs)
    return Figure(
        key="fleet_worker_samples_per_cpu_s",
        title="One backend worker, envelope to Parquet (800 one-sample series per batch)",
        unit="samples/CPU s", value=round(per_minute),
        target=f"≥ {FLEET_RATE:,.0f} samples per CPU second: one core serves 10,000 cars",
        met=per_minute >= FLEET_RATE, runs=runs,
        details={"batches_per_cpu_s_800_series": round(per_minute / 800, 1),
                 "cars_per_core_at_800_samples_a_minute": round(per_minute / (800 / 60)),
                 "samples_per_cpu_s_1hz_plan_48000_per_batch": round(per_second),
                 "target_1hz_plan": "≥ 1,000,000 samples per CPU second"})
