"""`edge-agent diag gps` and `diag sensors` against the running agent with real gpsd (gpsfake)
and a serial sensor on a pty: what a technician sees, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sources.sensor_protocols import nmea_sentence
from tests.helpers.agent_setup import REPO, write_agent_config
from tests.helpers.sensor_emulator import Emulator
from tests.helpers.support import wait_until
from tests.integration.test_sensors_end_to_end import sensor_sources


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "diag", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def diag_json(*args: str) -> tuple[int, dict]:
    result = diag(*args, "--json")
    document = json.loads(result.stdout)
    assert "error" not in document, f"diag {args[0]} got no answer: {document['error']}"
    return result.returncode, document


def agent_log(config: Path) -> str:
    return (config.parent / "agent.log").read_text()[-3000:]


@pytest.fixture
def sensor_agent(tmp_path, plain_mosquitto, dev_pki, looping_gpsd):
    fake = looping_gpsd
    emulator = Emulator(tmp_path / "ttyTPMS")
    socket_path = tmp_path / "control.sock"
    config = write_agent_config(
        tmp_path, port=plain_mosquitto.port, tls=dev_pki.client("demo-0001"), window=5.0,
        speed=1.0, extra=f'tls = false\n[control]\nsocket = "{socket_path}"\n'
                         + sensor_sources(fake.port, str(emulator.link)))
    text = config.read_text().replace("rebase = false", "rebase = true\nloop = true")
    config.write_text("\n".join(line for line in text.splitlines()
                                if not line.startswith(("ca_cert", "cert =", "key ="))))
    process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                               stderr=(tmp_path / "agent.log").open("w"),
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert wait_until(socket_path.exists), agent_log(config)
        yield str(socket_path), emulator, fake, config
    finally:
        process.terminate()
        process.wait(timeout=30)
        emulator.close()


def test_diag_gps_and_sensors_show_state_and_exit_non_zero_on_problems(sensor_agent):
    socket_path, emulator, fake, config = sensor_agent
    # A 3D fix can come before gpsd knows the date (from an RMC) and so before its TPVs carry
    # a time: wait for both.
    assert wait_until(lambda: diag_json("gps", "--socket", socket_path)[1]["sources"][0]
                      .get("fix_mode") == 3 and diag_json("gps", "--socket", socket_path)[1]
                      ["gps_minus_system_s"] is not None, timeout=60), agent_log(config)
    code, gps = diag_json("gps", "--socket", socket_path)
    source = gps["sources"][0]
    assert source["connected"] == 1 and source["fix"] == "3D"
    assert abs(source["readings"]["lat"]["value"] - 48.137154) < 1e-4
    assert source["readings"]["lat"]["unit"] == "deg"
    assert gps["gps_minus_system_s"] is not None  # the log is from 2026-01-15 12:00
    table = diag("gps", "--socket", socket_path)
    assert "3D" in table.stdout and "lat" in table.stdout
    # the NMEA log's time is far from this machine's: a clock warning, exit 1 (unless NTP)
    assert (code == 1) == bool(gps["warnings"])

    assert wait_until(lambda: diag_json("sensors", "--socket", socket_path)[1]["sources"][0]
                      .get("connected") == 1)
    emulator.send(nmea_sentence("TPMS,FL,231.5,24.5,2.95") + nmea_sentence("SUSP,RR,118.2"))
    assert wait_until(lambda: "pressure" in diag_json("sensors", "--socket", socket_path)[1]
                      ["sources"][0]["wheels"]["FL"])
    code, sensors = diag_json("sensors", "--socket", socket_path)
    wheels = sensors["sources"][0]["wheels"]
    assert wheels["FL"]["pressure"]["value"] == pytest.approx(231.5)
    assert wheels["FL"]["pressure"]["unit"] == "kPa"
    assert wheels["RR"]["height"]["value"] == pytest.approx(118.2)
    assert wheels["FR"] == {}
    assert (code, sensors["warnings"]) == (0, [])
    table = diag("sensors", "--socket", socket_path)
    assert table.returncode == 0 and "231.5 kPa" in table.stdout and "118.2 mm" in table.stdout

    emulator.send(b"$TPMS,FL,1,2,3*00\r\n")
    assert wait_until(lambda: diag("sensors", "--socket", socket_path).returncode == 1)
    code, sensors = diag_json("sensors", "--socket", socket_path)
    assert sensors["sources"][0]["rejected.bad_checksum"] == 1
    assert any("1 inputs rejected (bad_checksum 1)" in w for w in sensors["warnings"])
    status = diag_json("status", "--socket", socket_path)[1]
    assert any("bad_checksum 1" in w for w in status["warnings"])

    emulator.unplug()
    assert wait_until(lambda: any("not connected" in w for w in diag_json(
        "sensors", "--socket", socket_path)[1]["warnings"]))
    fake.stop()
    assert wait_until(lambda: any("not connected" in w for w in diag_json(
        "gps", "--socket", socket_path)[1]["warnings"]))
    assert diag("gps", "--socket", socket_path).returncode == 1
    emulator.plug()  # for the fixture's clean exit


def test_a_reload_keeps_unchanged_sensor_sources_open(sensor_agent):
    socket_path, emulator, _, config = sensor_agent
    assert wait_until(lambda: diag_json("sensors", "--socket", socket_path)[1]["sources"][0]
                      .get("connected") == 1), agent_log(config)
    # A 3D fix can come before gpsd knows the date (from an RMC) and so before its TPVs carry
    # a time: wait for both.
    assert wait_until(lambda: diag_json("gps", "--socket", socket_path)[1]["sources"][0]
                      .get("fix_mode") == 3 and diag_json("gps", "--socket", socket_path)[1]
                      ["gps_minus_system_s"] is not None, timeout=60), agent_log(config)
    before = {name: diag_json(name, "--socket", socket_path)[1]["sources"][0]["reconnects"]
              for name in ("gps", "sensors")}
    config.write_text("version = 2\n" + config.read_text()
                      + '\n[[sampling.signals]]\nmatch = "tpms.*.battery"\nexclude = true\n')
    reload = diag("reload", "--socket", socket_path)
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "version 2" in reload.stdout
    emulator.send(nmea_sentence("TPMS,RL,228.0,-5.5,2.80"))
    assert wait_until(lambda: any(row["signal"] == "tpms.RL.pressure" for row in diag_json(
        "signals", "tpms.*", "--socket", socket_path)[1]))
    rows = diag_json("signals", "tpms.*", "--socket", socket_path)[1]
    assert not any(row["signal"].endswith(".battery") for row in rows)  # the new plan
    after = {name: diag_json(name, "--socket", socket_path)[1]["sources"][0]["reconnects"]
             for name in ("gps", "sensors")}
    assert after == before  # the port and the gpsd connection stayed open
