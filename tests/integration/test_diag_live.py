"""`edge-agent diag live` on a real pseudo-terminal against a running agent: what a field
tech sees and the keys they press. Every step waits for what the screen shows, never a sleep."""

from __future__ import annotations

import os
import sys

import pexpect
import pytest

from tests.helpers.agent_setup import REPO

SPEED = "can0.ESP_VehicleSpeed.VehicleSpeed"


@pytest.fixture
def monitor(running_agent):
    child = pexpect.spawn(
        sys.executable, ["-m", "agent", "diag", "live", "ESP_*", "--interval", "0.3",
                         "--socket", str(running_agent["socket"]),
                         "--config", str(running_agent["config"])],
        env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color",
             "COLUMNS": "160", "LINES": "50"},
        dimensions=(50, 160), encoding="utf-8", codec_errors="replace", timeout=60, cwd="/")
    yield child
    child.close(force=True)


def test_live_monitor_header_filter_pause_and_quit(monitor):
    monitor.expect("edge-agent diag live")
    for counter in ("received", "ignored", "errors", "overflow", "frames/s"):
        monitor.expect(counter)
    monitor.expect("q quit")
    monitor.expect(SPEED.replace(".", r"\."))  # the full name, not cut

    monitor.send("f")
    monitor.expect(r"filter \(glob")
    monitor.send("TPMS_Status.*\r")
    monitor.expect(r"filter TPMS_Status\.\*")
    monitor.expect(r"filter TPMS_Status\.\*")  # a whole screen drawn with the filter
    frame = monitor.before
    assert "can0.TPMS_Status.TirePressure_FL" in frame and "kPa" in frame
    assert "ESP_VehicleSpeed" not in frame

    monitor.send("p")
    monitor.expect("PAUSED")

    monitor.send("q")
    monitor.expect(pexpect.EOF)
    monitor.close()
    assert monitor.exitstatus == 0
