"""Scale-out against a real Mosquitto (mutual TLS): a simulated fleet (tools/fleet-sim: each
vehicle its own key, the agent's own batch code) through 1, 2 and 4 workers in one shared
subscription group, into one Parquet data set: 0 false gaps, 0 undecodable, every sample
stored exactly once; and a worker stopped by SIGTERM writes what it holds. (The 1,000-vehicle
figure is the bench's: tools/bench --only fleet.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import duckdb
import pytest
from devkit.fleet_sim import vehicle_keys, vehicle_names
from fleet.query import gaps

from tests.helpers.agent_setup import REPO, start_backend
from tests.helpers.support import wait_until

VEHICLES = 30
MINUTES = 2
SAMPLES_PER_BATCH = 800


class Worker:
    """A backend worker whose output is drained as it comes (a full pipe would stall it)."""

    def __init__(self, process: subprocess.Popen, report) -> None:
        self.process = process
        self.report_path = report
        self.out: list[str] = []  # a summary line per batch
        self.err: list[str] = []
        self._threads = [threading.Thread(target=lambda: self.out.extend(process.stdout),
                                          daemon=True),
                         threading.Thread(target=lambda: self.err.extend(process.stderr),
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def batches_taken(self) -> int:
        return sum(line.startswith("verified ") for line in list(self.out))

    def stop(self, how: signal.Signals = signal.SIGTERM) -> dict:
        self.process.send_signal(how)
        self.process.wait(timeout=60)
        for thread in self._threads:
            thread.join(timeout=10)
        assert self.process.returncode == 0, "".join(self.err)[-3000:]
        return json.loads(self.report_path.read_text())


def run_fleet(keys, port, tls, vehicles, minutes):
    sim = subprocess.run(
        [sys.executable, "-m", "devkit.fleet_sim", "--vehicles", str(vehicles),
         "--minutes", str(minutes), "--keys-dir", str(keys), "--host", "127.0.0.1",
         "--port", str(port), "--ca-cert", str(tls.ca_cert), "--cert",
         str(tls.cert), "--key", str(tls.key), "--json"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert sim.returncode == 0, sim.stderr[-3000:]
    return json.loads(sim.stdout)


def source(root, table):
    return (f"read_parquet('{root}/{table}/**/*.parquet', hive_partitioning = true, "
            "hive_types = {'date': DATE, 'vehicle': VARCHAR})")


def stored_batches(root) -> int:
    if not any((root / "batches").rglob("*.parquet")):
        return 0
    return duckdb.connect().execute(f"SELECT count(*) FROM {source(root, 'batches')}"
                                    ).fetchone()[0]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_fleet_through_a_group_of_workers_is_stored_exactly_once(tmp_path, mosquitto,
                                                                    dev_pki, workers):
    keys = tmp_path / "keys"
    vehicle_keys(vehicle_names(VEHICLES, "sim-"), keys)  # before the workers read them
    dataset = tmp_path / "dataset"
    group = []
    for number in range(workers):
        report = tmp_path / f"w{number}.json"
        group.append(Worker(start_backend(
            mosquitto.port, dev_pki.client("backend"), f"*={keys}", "--group", "workers",
            "--dataset", str(dataset), "--worker", f"w{number}", "--flush", "0.5",
            "--dictionary-cache", str(tmp_path / "dictionaries"), "--report", str(report),
            "--timeout", "300"), report))
    summary = run_fleet(keys, mosquitto.port, dev_pki.client("fleet-sim"), VEHICLES, MINUTES)
    expected = VEHICLES * MINUTES
    assert summary["batches"] == expected and summary["all_acked"]
    assert summary["samples"] == expected * SAMPLES_PER_BATCH
    assert wait_until(lambda: stored_batches(dataset) >= expected, timeout=120)
    reports = [worker.stop() for worker in group]

    assert sum(r["verified"] for r in reports) == expected
    assert sum(r["decoded"] for r in reports) == expected
    assert all(r["rejected"] == 0 and r["undecodable"] == 0 for r in reports)
    assert all(r["dictionaries_rejected"] == 0 for r in reports)
    if workers > 1:
        assert all(r["verified"] > 0 for r in reports), "the group did not share the fleet"
    connection = duckdb.connect()
    # Coverage over every worker's files: complete, without a duplicate or a false gap.
    first = summary["first_seqs"]
    assert gaps(connection, dataset) == [
        {"vehicle": name, "boot": summary["boots"][name], "first": first[name],
         "last": first[name] + MINUTES - 1, "batches": MINUTES, "duplicates": 0, "missing": []}
        for name in vehicle_names(VEHICLES, "sim-")]
    # Every sample once: 800 rows per (vehicle, boot, seq), no row twice.
    per_batch = connection.execute(
        f"SELECT vehicle, boot, seq, count(*) AS n FROM {source(dataset, 'samples')} "
        "GROUP BY ALL").fetchall()
    assert len(per_batch) == expected
    assert {n for *_, n in per_batch} == {SAMPLES_PER_BATCH}
    assert {(vehicle, boot) for vehicle, boot, _, _ in per_batch} == set(
        summary["boots"].items())
    total, distinct = connection.execute(
        f"SELECT count(*), count(DISTINCT (vehicle, boot, seq, signal, time)) "
        f"FROM {source(dataset, 'samples')}").fetchone()
    assert total == distinct == summary["samples"]


def test_a_worker_ended_by_sigterm_writes_what_it_decoded(tmp_path, mosquitto, dev_pki):
    """As a supervisor stops a worker: its broker acknowledged every batch it took, so what
    it holds unwritten (no flush came during the run) must reach the data set at exit."""
    keys, dataset = tmp_path / "keys", tmp_path / "dataset"
    vehicle_keys(vehicle_names(5, "sim-"), keys)
    worker = Worker(start_backend(
        mosquitto.port, dev_pki.client("backend"), f"*={keys}", "--dataset", str(dataset),
        "--worker", "w0", "--flush", "3600", "--report", str(tmp_path / "w0.json"),
        "--timeout", "300"), tmp_path / "w0.json")
    summary = run_fleet(keys, mosquitto.port, dev_pki.client("fleet-sim"), 5, 2)
    assert wait_until(lambda: worker.batches_taken() == 10, timeout=120)
    assert not (dataset / "samples").exists()
    report = worker.stop(signal.SIGTERM)
    assert report["decoded"] == 10
    assert stored_batches(dataset) == 10
    rows = duckdb.connect().execute(f"SELECT count(*) FROM {source(dataset, 'samples')}"
                                    ).fetchone()[0]
    assert rows == summary["samples"] == 10 * SAMPLES_PER_BATCH
