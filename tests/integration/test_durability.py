"""Store-and-forward against real processes: SIGKILL at random moments, broker outages."""

from __future__ import annotations

import bisect
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from fleet.backend import load_keyring

from agent.config.schema import UplinkConfig
from agent.output.batch import open_batch
from tests.helpers.agent_setup import REPO, write_agent_config
from tests.helpers.capture import Capture
from tests.helpers.drive_replay import short_drive
from tests.helpers.support import wait_until

SEALED = re.compile(r"sealed batch (\d+): .* (spooled|in memory only)")
BOOT = re.compile(r"boot ([0-9a-f]{32})")
ACKED = re.compile(r"agent stopped: \d+ batches sealed, (\d+) acknowledged")
MAX_INFLIGHT = UplinkConfig().max_inflight


def spawn_agent(config: Path, log: Path, *args: str) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config),
                             *args], stdout=subprocess.DEVNULL, stderr=handle,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def committed_batches(log: Path) -> tuple[str | None, list[int]]:
    text = log.read_text()
    boot = BOOT.search(text)
    return (boot.group(1) if boot else None,
            [int(m.group(1)) for m in SEALED.finditer(text) if m.group(2) == "spooled"])


def opened(envelopes, keyring):
    return [open_batch(envelope, keyring) for envelope in envelopes]


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path, mosquitto, dev_pki,
                                                           request):
    kills = 200 if request.config.getoption("--long") else 50
    rng = random.Random(int(os.environ.get("AGENT_KILL_SEED", "20261123")))
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
        log=short_drive(tmp_path, 120), window=2.0, speed=10.0,
        extra="drain_rate = 0\n\n[state]\ndirectory = \"state\"\n")
    config.write_text(config.read_text().replace("rebase = false", "rebase = true\nloop = true"))
    collector = Capture(mosquitto.port, dev_pki.client("backend"), "fleet/+/telemetry")
    committed: set[tuple[str, int]] = set()
    try:
        for run in range(kills):
            log = tmp_path / f"run-{run}.log"
            agent = spawn_agent(config, log)
            time.sleep(rng.uniform(0.3, 2.5))
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            boot, seqs = committed_batches(log)
            committed.update((boot, seq) for seq in seqs)
            assert "is damaged" not in log.read_text(), log.read_text()[-2000:]
        final_log = tmp_path / "final.log"
        final = spawn_agent(config, final_log, "--duration", "6")
        assert final.wait(60) == 0, final_log.read_text()[-3000:]
        boot, seqs = committed_batches(final_log)
        # What the test itself saw, whatever the host's speed: the run to the end committed.
        assert seqs, "the final, uninterrupted run committed no batch"
        committed.update((boot, seq) for seq in seqs)
        assert "batches unacknowledged" not in final_log.read_text()
        keyring = load_keyring([tmp_path / "vehicle.pub"])[0]
        wait_until(lambda: committed <= {(body.boot.hex(), body.seq) for body in
                                         opened(list(collector.envelopes), keyring)},
                   timeout=30, interval=0.5)
    finally:
        collector.close()

    bodies = opened(collector.envelopes, keyring)
    delivered = [(body.boot.hex(), body.seq) for body in bodies]
    missing = committed - set(delivered)
    assert not missing, f"{len(missing)} committed batches never arrived: {sorted(missing)[:10]}"
    first_arrivals: dict[str, list[int]] = defaultdict(list)
    for boot, seq in dict.fromkeys(delivered):
        first_arrivals[boot].append(seq)
    for boot, seqs in first_arrivals.items():
        assert seqs == sorted(seqs), f"boot {boot} arrived out of order: {seqs}"


def longest_decreasing(sequence: list[int]) -> int:
    """Length of the longest strictly decreasing subsequence (patience sorting)."""
    piles: list[int] = []
    for value in sequence:
        position = bisect.bisect_left(piles, -value)
        piles[position:position + 1] = [-value]
    return len(piles)


@pytest.mark.parametrize("drain_rate", [0, 20])
def test_broker_outage_then_everything_arrives_in_order(tmp_path, mosquitto, dev_pki,
                                                        drain_rate):
    """drain_rate 0: the backlog first, then new batches: one increasing sequence.
    drain_rate 20: the backlog drains in order while new batches flow in order beside it:
    two interleaved increasing sequences, never a third."""
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
        log=short_drive(tmp_path, 240), window=2.0, speed=20.0,
        extra=f"drain_rate = {drain_rate}\nreconnect_max = 2\n")
    collector = Capture(mosquitto.port, dev_pki.client("backend"), "fleet/+/telemetry")
    log = tmp_path / "agent.log"
    agent = spawn_agent(config, log, "--exit-after-replay")
    try:
        assert wait_until(lambda: collector.count() >= 3, 30)
        mosquitto.stop()
        outage_started = len(SEALED.findall(log.read_text()))
        assert wait_until(lambda: len(SEALED.findall(log.read_text())) >= outage_started + 30, 60)
        mosquitto.start()
        assert agent.wait(120) == 0, log.read_text()[-3000:]
        sealed = len(SEALED.findall(log.read_text()))
        assert wait_until(lambda: collector.count() >= sealed, 30)
    finally:
        collector.close()
    text = log.read_text()
    assert "disconnected" in text and text.count("connected to") >= 2
    bodies = opened(collector.envelopes, load_keyring([tmp_path / "vehicle.pub"])[0])
    seqs = list(dict.fromkeys(body.seq for body in bodies))
    assert sorted(seqs) == list(range(sealed))
    assert longest_decreasing(seqs) <= (1 if drain_rate == 0 else 2), seqs
    assert all(body.health["spool.evicted"] == 0 for body in bodies)
    assert max(body.health["spool.depth"] for body in bodies) >= 30


def test_a_full_spool_evicts_oldest_counts_it_and_stays_in_bound(tmp_path, mosquitto, dev_pki):
    max_bytes = 60_000
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
        log=short_drive(tmp_path, 240), window=2.0, speed=20.0,
        extra=f"reconnect_max = 2\n\n[spool]\nmax_mb = {max_bytes / 2**20!r}\n")
    collector = Capture(mosquitto.port, dev_pki.client("backend"), "fleet/+/telemetry")
    mosquitto.stop()
    log = tmp_path / "agent.log"
    agent = spawn_agent(config, log, "--exit-after-replay")
    try:
        assert wait_until(lambda: len(SEALED.findall(log.read_text())) >= 60, 90)
        mosquitto.start()
        assert agent.wait(120) == 0, log.read_text()[-3000:]
        sealed = len(SEALED.findall(log.read_text()))
        acked = int(ACKED.search(log.read_text()).group(1))
        keyring = load_keyring([tmp_path / "vehicle.pub"])[0]
        # Every batch the broker acknowledged reaches the capture's persistent session.
        assert wait_until(lambda: len({body.seq for body in opened(collector.envelopes,
                                                                    keyring)}) >= acked,
                          timeout=30, interval=0.5), f"{acked} acknowledged, not all arrived"
    finally:
        collector.close()
    bodies = opened(collector.envelopes, keyring)
    evicted = max(body.health["spool.evicted"] for body in bodies)
    assert evicted > 0
    assert all(body.health["spool.bytes"] <= max_bytes for body in bodies)
    delivered = sorted({body.seq for body in bodies})
    missing = sorted(set(range(sealed)) - set(delivered))
    report = json.dumps({"sealed": sealed, "evicted": evicted, "delivered": delivered})
    assert len(missing) == evicted, report  # every loss counted, nothing else lost
    # The oldest went, except batches already published when the link returned (evicted last).
    assert len([seq for seq in delivered if seq < missing[-1]]) <= MAX_INFLIGHT, report
