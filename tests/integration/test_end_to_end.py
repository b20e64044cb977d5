"""The whole data path against a real Mosquitto with mutual TLS: agent → broker → backend."""

from __future__ import annotations

import json
import math
import re
import signal
from collections import defaultdict

import can
import cbor2
import pytest

from agent.decoding.dbc import load_dbc
from tests.helpers.agent_setup import (
    BUNDLED_DBC,
    BUNDLED_DRIVE,
    BUNDLED_EVENTS,
    run_agent,
    start_backend,
    write_agent_config,
)
from tests.helpers.capture import Capture
from tests.helpers.drive_replay import short_drive
from tests.helpers.support import wait_until

STATS_SIGNAL = "can0.ESP_VehicleSpeed.VehicleSpeed"


def reference_samples(log_path, dbc_path):
    """What the agent must report, computed independently: cantools over the whole log."""
    database = load_dbc([dbc_path]).database
    frames = list(can.LogReader(str(log_path)))
    first, last = frames[0].timestamp, frames[-1].timestamp
    ticks = range(math.ceil(first), math.floor(last) + 1)
    latest: dict[tuple, can.Message] = {}
    expected: dict[tuple[str, int], float] = {}
    stats: dict[int, list[float]] = defaultdict(list)
    speed_message = database.get_message_by_name("ESP_VehicleSpeed")
    position = 0
    for tick in ticks:
        while position < len(frames) and frames[position].timestamp < tick:
            frame = frames[position]
            position += 1
            try:
                message = database.get_message_by_frame_id(frame.arbitration_id)
            except KeyError:
                continue
            decoded = message.decode(bytes(frame.data), decode_choices=False)
            for name, value in decoded.items():
                if not message.get_signal_by_name(name).is_multiplexer:
                    latest[(message.name, name)] = (frame.timestamp, value)
            if message is speed_message:
                stats[math.floor(frame.timestamp)].append(decoded["VehicleSpeed"])
        for (message_name, signal_name), (stamp, value) in latest.items():
            if tick - stamp <= 10.0:
                expected[(f"can0.{message_name}.{signal_name}", tick * 1000)] = value
    return expected, stats


def test_bundled_drive_arrives_verified_and_equal_to_cantools(tmp_path, mosquitto, dev_pki):
    vehicle_tls = dev_pki.client("demo-0001")
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=vehicle_tls,
                                extra="\n[events]\nenabled = true\n")
    rows_path = tmp_path / "rows.jsonl"
    report_path = tmp_path / "report.json"
    backend = start_backend(mosquitto.port, dev_pki.client("backend"),
                            f"demo-0001={tmp_path / 'vehicle.pub'}",
                            "--format", "jsonl", "--output", str(rows_path),
                            "--timeout", "600", "--report", str(report_path))
    agent = run_agent(config, "--exit-after-replay", timeout=600)
    assert agent.returncode == 0, agent.stderr[-3000:]
    assert "batches unacknowledged" not in agent.stderr
    sealed = agent.stderr.count("sealed batch")
    assert sealed >= 4
    with_samples = {int(seq) for seq, count in
                    re.findall(r"sealed batch (\d+): (\d+) samples", agent.stderr)
                    if int(count)}

    def arrived() -> bool:
        """Every batch with samples and every event is in the backend's rows (flushed per
        batch): however slow the host, the test stops the backend only then."""
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()
                if line.endswith("}")]
        return ({row["seq"] for row in rows if "event" not in row} == with_samples
                and sum("event" in row for row in rows) == len(BUNDLED_EVENTS))

    assert wait_until(arrived, timeout=120), rows_path.read_text()[-2000:]
    backend.send_signal(signal.SIGTERM)
    out, err = backend.communicate(timeout=60)
    assert backend.returncode == 0, err[-3000:]

    report = json.loads(report_path.read_text())
    assert report["verified"] == sealed and report["rejected"] == 0
    assert report["duplicates"] == 0 and report["gaps"] == []
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    events = [row for row in rows if "event" in row]
    assert [row["event"] for row in events] == BUNDLED_EVENTS  # on their own topic, verified
    assert report["events"] == len(events) and report["event_gaps"] == []
    assert all(row["vehicle"] == "demo-0001" for row in events)

    expected, speed_stats = reference_samples(BUNDLED_DRIVE, BUNDLED_DBC)
    got_last: dict[tuple[str, int], float] = {}
    got_stats = {}
    for row in rows:
        if "event" in row:
            continue
        key = (row["signal"], round(row["time"] * 1000))
        if row["signal"] == STATS_SIGNAL:
            got_stats[key[1] // 1000] = row
        else:
            got_last[key] = row["value"]
    expected_last = {k: v for k, v in expected.items() if k[0] != STATS_SIGNAL}
    assert len({signal for signal, _ in got_last}) >= 800
    assert got_last.keys() == expected_last.keys()
    mismatches = [(k, got_last[k], v) for k, v in expected_last.items() if got_last[k] != v]
    assert mismatches == []
    assert set(got_stats) == set(speed_stats)
    for second, values in speed_stats.items():
        row = got_stats[second]
        assert (row["min"], row["max"], row["count"]) == (min(values), max(values), len(values))
        assert row["mean"] == pytest.approx(sum(values) / len(values), rel=1e-9)


def test_tampered_batch_is_rejected_by_the_backend(tmp_path, mosquitto, dev_pki):
    vehicle_tls = dev_pki.client("demo-0001")
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=vehicle_tls,
                                log=short_drive(tmp_path, 5))
    backend_tls = dev_pki.client("backend")
    subscriber = Capture(mosquitto.port, backend_tls, "fleet/+/telemetry")
    try:
        agent = run_agent(config, "--exit-after-replay")
        assert agent.returncode == 0, agent.stderr[-3000:]
        envelopes = wait_until(lambda: subscriber.envelopes, timeout=30)
        assert envelopes, "no batch reached the subscriber"
        protected, unprotected, payload, signature = cbor2.loads(envelopes[0]).value
        tampered = cbor2.dumps(cbor2.CBORTag(18, [protected, dict(unprotected),
                                                  payload[:-1] + bytes([payload[-1] ^ 0x20]),
                                                  signature]))
        backend = start_backend(mosquitto.port, backend_tls, tmp_path / "vehicle.pub",
                                "--count", "2", "--timeout", "30")
        for envelope in (tampered, envelopes[0]):
            subscriber.publish("fleet/demo-0001/telemetry", envelope)
        out, err = backend.communicate(timeout=40)
    finally:
        subscriber.close()
    assert backend.returncode == 1
    lines = out.splitlines()
    assert lines[0].startswith("REJECTED") and "signature does not verify" in lines[0]
    assert lines[1].startswith("verified demo-0001")
    assert json.loads(err.strip().splitlines()[-1])["rejected"] == 1
