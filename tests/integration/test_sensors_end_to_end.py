"""The real agent with a gpsd source (gpsfake), a serial sensor (pty emulator) and the CAN
replay: the verified batches at the backend carry the gps.* and tpms.* signals."""

from __future__ import annotations

import json
import re
import threading

from agent.runtime.clock import kernel_clock_synchronised
from agent.sources.sensor_protocols import nmea_sentence
from tests.helpers.agent_setup import run_agent, start_backend, write_agent_config
from tests.helpers.sensor_emulator import Emulator


def sensor_sources(gpsd_port: int, serial_port: str) -> str:
    return f"""
[[sources]]
name = "gps"
type = "gpsd"
port = {gpsd_port}

[[sources]]
name = "tpms"
type = "serial"
port = "{serial_port}"
protocol = "nmea"

[[sampling.signals]]
match = "gps.*"

[[sampling.signals]]
match = "tpms.*"

[[sampling.signals]]
match = "tpms.FL.height"
mode = "stats"
"""


def keep_sending(emulator: Emulator, stop: threading.Event) -> None:
    height = 100.0
    while not stop.is_set():
        height = 100.0 if height >= 120 else height + 5
        emulator.send(nmea_sentence("TPMS,FL,231.5,24.5,2.95")
                      + nmea_sentence(f"SUSP,FL,{height:.1f}")
                      + b"$TPMS,FL,1,2,3*00\r\n")  # bad checksum: counted, dropped
        stop.wait(0.2)


def test_gps_and_tpms_signals_arrive_in_verified_batches(tmp_path, mosquitto, dev_pki,
                                                         looping_gpsd):
    emulator = Emulator(tmp_path / "ttyTPMS")
    stop = threading.Event()
    feeder = threading.Thread(target=keep_sending, args=(emulator, stop), daemon=True)
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"), window=5.0, speed=1.0,
        extra=sensor_sources(looping_gpsd.port, str(emulator.link)))
    config.write_text(config.read_text().replace("rebase = false", "rebase = true"))
    rows_path = tmp_path / "rows.jsonl"
    report_path = tmp_path / "report.json"
    backend = start_backend(mosquitto.port, dev_pki.client("backend"),
                            f"demo-0001={tmp_path / 'vehicle.pub'}",
                            "--format", "jsonl", "--output", str(rows_path), "--idle", "12",
                            "--timeout", "150", "--report", str(report_path))
    try:
        feeder.start()
        agent = run_agent(config, "--duration", "16")
    finally:
        stop.set()
        feeder.join(timeout=10)
        emulator.close()
    assert agent.returncode == 0, agent.stderr[-3000:]
    out, err = backend.communicate(timeout=60)
    assert backend.returncode == 0, err[-3000:]
    report = json.loads(report_path.read_text())
    assert report["verified"] == agent.stderr.count("sealed batch") >= 3
    assert report["rejected"] == 0 and report["gaps"] == []

    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    by_signal: dict[str, list[dict]] = {}
    for row in rows:
        by_signal.setdefault(row["signal"], []).append(row)
    assert {"gps.lat", "gps.lon", "gps.alt", "gps.speed", "gps.track", "gps.mode", "gps.hdop",
            "gps.sats"} <= set(by_signal)
    assert all(abs(row["value"] - 48.137154) < 1e-4 for row in by_signal["gps.lat"])
    assert {row["label"] for row in by_signal["gps.mode"]} <= {"2D", "3D"}
    assert {row["value"] for row in by_signal["tpms.FL.pressure"]} == {231.5}
    assert {row["unit"] for row in by_signal["tpms.FL.pressure"]} == {"kPa"}
    assert {round(row["value"], 2) for row in by_signal["tpms.FL.battery"]} == {2.95}
    heights = by_signal["tpms.FL.height"]
    assert all(100.0 <= row["min"] <= row["max"] <= 120.0 for row in heights)
    assert any(row["signal"] == "can0.ESP_VehicleSpeed.VehicleSpeed" for row in rows)


def test_without_ntp_batch_times_are_corrected_from_gps(tmp_path, mosquitto, dev_pki,
                                                        looping_gpsd):
    """No replay: the batches' clock is the system's. This machine's kernel clock is not
    synchronised, so the agent shifts batch times to the NMEA log's GPS time (2026-01-15)."""
    emulator = Emulator(tmp_path / "ttyTPMS")
    config = write_agent_config(
        tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"), window=3.0,
        extra=sensor_sources(looping_gpsd.port, str(emulator.link)))
    text = config.read_text()
    can_source = text[text.index("[[sources]]"):text.index("[batch]")]
    config.write_text(text.replace(can_source, ""))  # gps and tpms only: no replay clock
    report_path = tmp_path / "report.json"
    backend = start_backend(mosquitto.port, dev_pki.client("backend"),
                            f"demo-0001={tmp_path / 'vehicle.pub'}", "--idle", "12",
                            "--timeout", "150", "--report", str(report_path))
    try:
        agent = run_agent(config, "--duration", "14")
    finally:
        emulator.close()
    assert agent.returncode == 0, agent.stderr[-3000:]
    out, err = backend.communicate(timeout=60)
    assert backend.returncode == 0, err[-3000:]
    clocks = re.findall(r"verified demo-0001 boot \w+ seq \d+: (\S+)-\S+ UTC.*clock (\w+)", out)
    assert len(clocks) >= 3
    if kernel_clock_synchronised():
        assert {clk for _, clk in clocks} == {"ntp"}
    else:
        # the first window may close before gpsd's first fix: `rtc`, then `gps` for good
        names = [clk for _, clk in clocks]
        assert names[-1] == "gps" and set(names) <= {"rtc", "gps"}, (
            f"clocks {names}: no GPS time reached the agent; gpsfake said:\n"
            f"{looping_gpsd.output()}\nagent:\n{agent.stderr[-2000:]}")
        assert names == sorted(names, key=("rtc", "gps").index)
        # the log runs 12:00:00-12:00:23 UTC and loops; times follow it, not this machine
        starts = [start for start, clk in clocks if clk == "gps"]
        assert all(start.startswith("12:00:") or start.startswith("11:59:") for start in starts)
