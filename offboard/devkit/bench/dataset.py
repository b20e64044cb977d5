"""Backend throughput into Parquet: samples/s per worker over many real sealed batches.

`python -m devkit.bench.dataset [--batches N]`: seals N one-minute batches of 800 signals at
1 Hz with the agent's own batch code (devkit.bench.synthetic), then times one worker doing what
`tools/backend --dataset` does per batch: verify, decompress and decode (Backend.receive),
build the sample table, and write the data set (one flush at the end, which writes the files).
Prints samples/s for the whole path and for its parts. Single-threaded, like one worker.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from fleet.backend import Backend
from fleet.dataset import DatasetWriter

from agent.wire.keys import key_id
from devkit.bench import synthetic


def seal_batches(count: int) -> tuple[list[bytes], object]:
    signer, public_key = synthetic.signer()
    data = synthetic.minutes(1)[0]
    ring = synthetic.ring_for(data)
    batcher = synthetic.batcher(data, ring, signer)
    envelopes = []
    for n in range(count):
        t0 = synthetic.T0_MS + n * 60_000
        synthetic.fill(ring, data, t0)
        envelopes.append(batcher.seal(t0, t0 + 60_000).envelope)
    return envelopes, public_key


def run(count: int) -> dict[str, float]:
    envelopes, public_key = seal_batches(count)
    backend = Backend({key_id(public_key): public_key})
    receiving = building = 0.0
    with tempfile.TemporaryDirectory() as root:
        writer = DatasetWriter(Path(root), "bench")
        started = time.perf_counter()
        for envelope in envelopes:  # one at a time, as a worker gets them
            at = time.perf_counter()
            body = backend.receive(envelope).body
            decoded = time.perf_counter()
            writer.add_received(body)
            writer.add_samples(body, backend.dictionaries.lookup(body.dictionary_id))
            receiving += decoded - at
            building += time.perf_counter() - decoded
        built = time.perf_counter()
        writer.flush()
        done = time.perf_counter()
    samples = backend.samples
    return {"batches": count, "samples": samples,
            "samples_per_s": samples / (done - started),
            "receive_decode_samples_per_s": samples / receiving,
            "table_samples_per_s": samples / building,
            "parquet_write_samples_per_s": samples / (done - built)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.bench.dataset",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60,
                        help="one-minute batches of 800 signals (default: 60, 2.88 M samples)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.batches), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
