"""Figure 5: draining a spool backlog to a local Mosquitto (agent/output/spool.py +
agent/output/uplink.py).

A backlog of sealed minutes (1,440: a day offline; 240 with --quick) waits in a fresh spool;
an `Uplink` with the drain limit off (`drain_rate = 0`: the figure is what the agent can do,
the shipped 50 batches/s is a choice for the cellular link) connects to a plain Mosquitto on
loopback, and the clock runs from the connection to the last PUBACK's deletion from the spool.
The same-run baseline: paho-mqtt publishing the same envelopes at QoS 1 from memory (no disk)
with the same in-flight window, until the last PUBACK.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.config.schema import UplinkConfig
from agent.output.spool import Spool
from agent.output.uplink import Uplink
from devkit.bench import synthetic
from devkit.bench.common import Figure, median
from devkit.broker import MosquittoBroker

TARGET = 100.0
MAX_INFLIGHT = UplinkConfig().max_inflight


def run(quick: bool) -> Figure:
    backlog = 240 if quick else 1_440
    repeats = 1 if quick else 3
    envelopes = _envelopes()
    with (tempfile.TemporaryDirectory(prefix="bench-drain-") as scratch,
          MosquittoBroker(Path(scratch) / "broker", None) as broker):
        agent_rates, baseline_rates = [], []
        for attempt in range(repeats):
            agent_rates.append(_agent_rate(Path(scratch) / f"spool-{attempt}", broker,
                                           envelopes, backlog))
            baseline_rates.append(_baseline_rate(broker, envelopes, backlog))
    rate, baseline = median(agent_rates), median(baseline_rates)
    return Figure(
        key="spool_drain_batches_per_s", title="Spool drain to a local Mosquitto",
        unit="batches/s", value=round(rate, 1), baseline=round(baseline, 1),
        baseline_name="paho QoS 1 publish from memory, same in-flight window",
        ratio=round(rate / baseline, 2), target=f"≥ {TARGET:g} batches/s", met=rate >= TARGET,
        runs=repeats, details={"backlog": backlog, "envelope_bytes": len(envelopes[0])})


def _envelopes() -> list[bytes]:
    """Four sealed synthetic minutes (~15 kB each), used round robin."""
    minutes = synthetic.minutes(4)
    signer, _ = synthetic.signer()
    ring = synthetic.ring_for(minutes[0])
    batcher = synthetic.batcher(minutes[0], ring, signer)
    envelopes = []
    for number, data in enumerate(minutes, start=1):
        t0 = synthetic.T0_MS + number * 60_000
        synthetic.fill(ring, data, t0)
        envelopes.append(batcher.seal(t0, t0 + 60_000).envelope)
    return envelopes


def _agent_rate(directory: Path, broker: MosquittoBroker, envelopes: list[bytes],
                backlog: int) -> float:
    spool = Spool(directory / "spool.sqlite", 1 << 30)
    boot = bytes(16)
    for seq in range(backlog):
        spool.put("telemetry", boot, seq, envelopes[seq % len(envelopes)])
    config = UplinkConfig(host=broker.host, port=broker.port, tls=False, drain_rate=0)
    uplink = Uplink(config, f"bench-{time.monotonic_ns()}", boot, spool)
    uplink.start()
    try:
        deadline = time.monotonic() + 30
        while not uplink.health.connected:
            if time.monotonic() > deadline:
                raise RuntimeError("the uplink did not connect to the local Mosquitto")
            time.sleep(0.001)
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while spool.stats().depth:
            if time.monotonic() > deadline:
                raise RuntimeError("the backlog did not drain within 300 s")
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        uplink.stop(timeout=1)
        spool.close()
    return backlog / elapsed


def _baseline_rate(broker: MosquittoBroker, envelopes: list[bytes], backlog: int) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"bench-baseline-{time.monotonic_ns()}")
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_publish = lambda *args: acked.release()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not connected.wait(30):
            raise RuntimeError("paho did not connect to the local Mosquitto")
        started = time.perf_counter()
        for seq in range(backlog):
            client.publish("bench/telemetry", envelopes[seq % len(envelopes)], qos=1)
        for _ in range(backlog):
            if not acked.acquire(timeout=60):
                raise RuntimeError("PUBACKs stopped arriving")
        return backlog / (time.perf_counter() - started)
    finally:
        client.loop_stop()
        client.disconnect()
