"""Fleet scale-out: a simulated fleet through 1, 2 and 4 backend workers of one shared group.

`tools/bench --only fleet` (not in the default run: it takes a few minutes). 1,000 vehicles
(`--quick`: 100) of tools/fleet-sim, each its own key and the agent's own Batcher, 800 signals
sampled once a minute (800 samples per batch, the design sizing), one minute each (quick:
two), in the fleet's steady state (a batch carries the dictionary in band once an hour, as a
running agent's does), against a real Mosquitto with mutual TLS. For each group size K:

1. K workers (`tools/backend --group bench --dataset DIR`, each its own process) start and
   subscribe; then they are frozen (SIGSTOP), so that the broker queues their share.
2. The fleet's batches, sealed beforehand (not timed), are published and acknowledged.
3. The workers are thawed (SIGCONT) and drain; each reports when it took its first batch and
   finished its last: verify, decode, Parquet tables, and the data set written every 30 s
   (each flush writes a file per vehicle and table); the last flush, at exit, is not timed.

Per worker: batches/s and samples/s over its own busy time, and per CPU second (the ceiling
of one core). For the group: batches over the span from the first worker's first batch to the
last worker's last, and the scaling against one worker. Exactness: the data set's coverage
(`query gaps`) and one count of samples per (vehicle, boot, seq).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from fleet.query import gaps, parquet_source

from devkit.bench.common import REPO, Figure
from devkit.broker import MosquittoBroker
from devkit.fleet_sim import (
    Message,
    Publisher,
    first_window,
    fleet_messages,
    fleet_plan,
    make_vehicles,
)
from devkit.pki import TlsFiles, make_dev_pki

GROUPS = (1, 2, 4)


def run(quick: bool) -> Figure:
    vehicles, minutes = (100, 2) if quick else (1000, 1)
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        root = Path(scratch)
        pki = make_dev_pki(root / "pki")
        with MosquittoBroker(root / "broker", pki) as broker:
            for workers in GROUPS:
                results[workers] = _group_run(root / f"k{workers}", broker, pki.client(
                    "backend"), pki.client("fleet-sim"), workers, vehicles, minutes)
    one, most = results[GROUPS[0]], results[GROUPS[-1]]
    exact = all(r["exact"] for r in results.values())
    details: dict[str, float | int | str] = {
        "vehicles": vehicles, "minutes": minutes, "samples_per_batch": one["samples_per_batch"],
        "batches": one["batches"], "load_before": most["load_before"]}
    for workers, r in results.items():
        prefix = f"{workers}w"
        details.update({
            f"{prefix}_group_batches_per_s": r["group_batches_per_s"],
            f"{prefix}_group_samples_per_s": r["group_samples_per_s"],
            f"{prefix}_per_worker_batches_per_s": r["per_worker_batches_per_s"],
            f"{prefix}_per_worker_samples_per_s": r["per_worker_samples_per_s"],
            f"{prefix}_samples_per_cpu_s": r["samples_per_cpu_s"],
            f"{prefix}_false_gaps": r["false_gaps"], f"{prefix}_duplicates": r["duplicates"],
            f"{prefix}_undecodable": r["undecodable"],
            f"{prefix}_stored_once": str(r["stored_once"]),
        })
    scaling = most["group_samples_per_s"] / one["group_samples_per_s"]
    return Figure(
        key="fleet_samples_per_s",
        title=f"Fleet scale-out: {vehicles} vehicles through {GROUPS[-1]} workers",
        unit="samples/s", value=most["group_samples_per_s"],
        baseline=one["group_samples_per_s"], baseline_name="1 worker",
        ratio=round(scaling, 2), target="0 false gaps, 0 undecodable, each sample once",
        met=exact, runs=1, details=details)


def _group_run(directory: Path, broker: MosquittoBroker, worker_tls: TlsFiles,
               sim_tls: TlsFiles, workers: int, vehicles: int, minutes: int) -> dict[str, Any]:
    directory.mkdir(parents=True)
    keys, dataset, prefix = directory / "keys", directory / "dataset", f"bench{workers}"
    shared = fleet_plan(800, 60, pool=min(minutes + 3, 10))
    fleet = make_vehicles(vehicles, shared, keys, "sim-")
    messages = list(fleet_messages(fleet, shared, prefix, minutes, first_window(minutes)))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number in range(workers):
            processes.append(_start_worker(directory, broker, worker_tls, keys, dataset,
                                           prefix, number))
        reports, load_before = _drain(directory, broker, sim_tls, processes, messages)
    finally:
        for process in processes:  # a run that failed leaves no worker behind
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
    batches = sum(1 for m in messages if not m.retain)
    samples = sum(m.samples for m in messages)
    return {"samples_per_batch": shared.samples_per_window, "batches": batches,
            "load_before": round(load_before, 2),
            **_throughput(reports, shared.samples_per_window),
            **_exactness(dataset, reports, batches, samples, shared.samples_per_window)}


def _drain(directory: Path, broker: MosquittoBroker, sim_tls: TlsFiles,
           processes: list[subprocess.Popen[bytes]], messages: list[Message]
           ) -> tuple[list[dict[str, Any]], float]:
    """Freeze the workers, publish the fleet, thaw them, wait until they took every batch,
    stop them: their reports, and the load average before."""
    load_before = os.getloadavg()[0]
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    try:
        publisher = Publisher(argparse.Namespace(
            host=broker.host, port=broker.port, plaintext=False, ca_cert=sim_tls.ca_cert,
            cert=sim_tls.cert, key=sim_tls.key), 4)
        try:
            for message in messages:
                publisher.publish(message.vehicle, message.topic, message.payload,
                                  retain=message.retain)
            if not publisher.wait_acked(timeout=300):
                raise RuntimeError("the broker did not acknowledge every batch")
        finally:
            publisher.close()
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)
    batches = sum(1 for m in messages if not m.retain)
    # Drained when the workers have printed a line for every batch; then they are stopped
    # (and write what they hold). Their reports carry their own first and last batch times.
    deadline = time.monotonic() + 3600
    while _batch_lines(directory, len(processes)) < batches and time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.5)
    reports = []
    for number, process in enumerate(processes):
        process.send_signal(signal.SIGTERM)  # the worker flushes and reports, as at Ctrl-C
        process.wait(timeout=300)
        if process.returncode != 0:
            log = (directory / f"w{number}.log").read_text(errors="replace")
            raise RuntimeError(f"worker {number} failed: {log[-2000:]}")
        reports.append(json.loads((directory / f"w{number}.json").read_text()))
    return reports, load_before


def _start_worker(directory: Path, broker: MosquittoBroker, tls: TlsFiles, keys: Path,
                  dataset: Path, prefix: str, number: int) -> subprocess.Popen[bytes]:
    """A worker, returned once subscribed. Its summary lines and log go to files (a pipe
    nobody reads while it works could stall it)."""
    log = directory / f"w{number}.log"
    with log.open("wb") as stderr, (directory / f"w{number}.out").open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleet.backend", "--host", broker.host, "--port",
             str(broker.port), "--ca-cert", str(tls.ca_cert), "--cert", str(tls.cert),
             "--key", str(tls.key), "--keys", f"*={keys}", "--prefix", prefix,
             "--group", "bench", "--dataset", str(dataset), "--worker", f"w{number}",
             "--flush", "30", "--dictionary-cache", str(directory / "dictionaries"),
             "--timeout", "3600", "--report", str(directory / f"w{number}.json")],
            stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while b"subscribed to" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("a worker did not subscribe:\n"
                               + log.read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    return process


def _batch_lines(directory: Path, workers: int) -> int:
    """Batches the workers have taken so far: their summary lines ("verified ...")."""
    return sum((directory / f"w{number}.out").read_bytes().count(b"\nverified ")
               + (directory / f"w{number}.out").read_bytes().startswith(b"verified ")
               for number in range(workers))


def _throughput(reports: list[dict[str, Any]], per_batch: int) -> dict[str, Any]:
    busy = [max(r["last_batch_at"] - r["first_batch_at"], 1e-9) for r in reports]
    per_worker = [r["decoded"] / seconds for r, seconds in zip(reports, busy, strict=True)]
    span = max(r["last_batch_at"] for r in reports) - min(r["first_batch_at"] for r in reports)
    decoded = sum(r["decoded"] for r in reports)
    cpu = sum(r["busy_cpu_seconds"] for r in reports)
    return {
        "group_batches_per_s": round(decoded / span, 1),
        "group_samples_per_s": round(decoded * per_batch / span),
        "per_worker_batches_per_s": round(sum(per_worker) / len(per_worker), 1),
        "per_worker_samples_per_s": round(sum(per_worker) / len(per_worker) * per_batch),
        "samples_per_cpu_s": round(decoded * per_batch / cpu) if cpu else 0,
    }


def _exactness(dataset: Path, reports: list[dict[str, Any]], batches: int, samples: int,
               per_batch: int) -> dict[str, Any]:
    connection = duckdb.connect()
    try:
        coverage = gaps(connection, dataset)
        stored = parquet_source(dataset, "samples")
        counts = connection.execute(
            f"SELECT count(*), count(*) FILTER (WHERE n <> {per_batch}), coalesce(sum(n), 0) "
            f"FROM (SELECT vehicle, boot, seq, count(*) AS n FROM {stored} GROUP BY ALL)"
        ).fetchone()
    finally:
        connection.close()
    false_gaps = sum(len(row["missing"]) for row in coverage)
    duplicates = sum(row["duplicates"] for row in coverage)
    undecodable = sum(r["undecodable"] + r["rejected"] for r in reports)
    stored_once = counts == (batches, 0, samples)
    return {"false_gaps": false_gaps, "duplicates": duplicates, "undecodable": undecodable,
            "stored_once": stored_once,
            "exact": stored_once and not (false_gaps or duplicates or undecodable)}
