"""The daemon under systemd: log lines journald can file by priority, stamped once."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers.agent_setup import REPO, write_agent_config


@pytest.mark.parametrize("under_systemd", [True, False])
def test_under_systemd_the_daemon_logs_syslog_priorities_without_timestamps(
        tmp_path, mosquitto, dev_pki, under_systemd):
    """JOURNAL_STREAM names the stderr systemd gave the service (its device and inode): then
    every line starts with its priority, `<4>` for a warning, and carries no time of its own
    (journald stamps it). Elsewhere lines are as before: a timestamp, then the level.
    --log-level after the command is honoured (debug lines)."""
    log = tmp_path / "drive.log"
    log.write_text("(1700000000.000000) can0 123#00\n(1700000000.100000) can0 123#01\n")
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                log=log, window=1.0)
    # A channel the log does not have: the replay source warns that it played nothing.
    config.write_text(config.read_text().replace("rebase = false",
                                                 'rebase = false\nchannel = "can9"'))
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with (tmp_path / "stderr").open("w") as stderr:
        if under_systemd:
            status = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        result = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--config", str(config), "--exit-after-replay",
             "--log-level", "debug"], stderr=stderr, stdout=subprocess.DEVNULL, timeout=120,
            env={**env, "PYTHONPATH": str(REPO)})
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert result.returncode == 0, "\n".join(lines[-30:])
    prefix = {level: f"<{priority}>{level}" if under_systemd else f" {level} "
              for level, priority in (("WARNING", 4), ("INFO", 6), ("DEBUG", 7))}
    assert any(prefix["WARNING"] in line and "no frame on channel 'can9'" in line
               for line in lines), lines
    assert any(prefix["INFO"] in line for line in lines)
    assert any(prefix["DEBUG"] in line for line in lines)
    stamped = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]
    if under_systemd:
        assert lines and all(re.match(r"<[0-7]>[A-Z]", line) for line in lines), lines[:10]
        assert stamped == []
    else:
        assert stamped and not any(line.startswith("<") for line in lines)
