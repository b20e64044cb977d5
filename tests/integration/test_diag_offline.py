"""`edge-agent diag` with the agent stopped: the queue read from the spool file the agent left,
the support bundle with the journal (or where the logs are, without journalctl)."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import tarfile

import pytest
from devkit.broker import free_port

from tests.helpers.agent_setup import BUNDLED_DRIVE, REPO, run_agent, write_agent_config
from tests.helpers.support import require_tool


def diag(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "diag", *args], capture_output=True,
                          text=True, timeout=60, cwd="/",
                          env={**(env or os.environ), "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def stopped_agent(tmp_path_factory, dev_pki):
    """An agent that played 15 s of the bundled drive with its broker unreachable, then
    stopped: its batches wait in the spool file."""
    directory = tmp_path_factory.mktemp("stopped-agent")
    log = directory / "drive.log"
    with gzip.open(BUNDLED_DRIVE, "rt") as drive:
        log.write_text("".join(itertools.islice(drive, 4000)))
    config = write_agent_config(directory, port=free_port(), tls=dev_pki.client("demo-0001"),
                                log=log, window=2.0,
                                extra=f'\n[state]\ndirectory = "{directory / "state"}"\n')
    result = run_agent(config, "--exit-after-replay")
    assert result.returncode == 0, result.stderr[-3000:]
    with contextlib.closing(sqlite3.connect(directory / "state" / "spool.sqlite")) as db:
        depth, size = db.execute("SELECT COUNT(*), SUM(LENGTH(envelope)) FROM batches").fetchone()
    assert depth > 1
    return {"config": config, "depth": depth, "bytes": size, "directory": directory,
            "socket": directory / "none.sock"}


def test_queue_reads_the_spool_file_when_the_agent_is_down(stopped_agent):
    args = ("--config", str(stopped_agent["config"]), "--socket", str(stopped_agent["socket"]))
    result = diag("queue", "--json", *args)
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    assert document["running"] is False and document["source"] == "spool file"
    assert (document["depth"], document["bytes"]) == (stopped_agent["depth"],
                                                      stopped_agent["bytes"])
    assert document["lanes"][-1]["lane"] == "telemetry"
    assert document["lanes"][-1]["consent"] == "full"
    assert document["oldest_age_s"] >= 0

    human = diag("queue", *args)
    assert human.returncode == 3
    assert "the agent is not running: read the spool file" in human.stdout
    assert f"{stopped_agent['depth']} batches waiting" in human.stdout


def bundle_members(path) -> dict[str, str]:
    with tarfile.open(path) as archive:
        return {member.name.split("/", 1)[1]: archive.extractfile(member).read().decode()
                for member in archive.getmembers()}


def test_bundle_with_the_agent_down_holds_the_spool_and_the_journal(stopped_agent):
    journalctl = require_tool("journalctl")
    output = stopped_agent["directory"] / "bundle.tar.gz"
    result = diag("bundle", "--config", str(stopped_agent["config"]), "--socket",
                  str(stopped_agent["socket"]), "--output", str(output), "--log-lines", "50")
    assert result.returncode == 0, result.stderr
    assert "logs: journal.txt (" in result.stdout
    members = bundle_members(output)
    assert json.loads(members["queue.json"])["depth"] == stopped_agent["depth"]
    assert json.loads(members["status.json"])["running"] is False
    journal = subprocess.run([journalctl, "-u", "edge-agent", "-n", "50", "--no-pager"],
                             capture_output=True, text=True, timeout=30)
    assert members["journal.txt"].startswith(f"$ {journalctl} -u edge-agent -n 50")
    assert (journal.stdout + journal.stderr).strip() in members["journal.txt"]


def test_bundle_without_journalctl_says_where_the_logs_are(stopped_agent):
    output = stopped_agent["directory"] / "bundle-no-journal.tar.gz"
    python_only = stopped_agent["directory"] / "bin"
    python_only.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(python_only)}
    result = diag("bundle", "--config", str(stopped_agent["config"]), "--socket",
                  str(stopped_agent["socket"]), "--output", str(output), env=env)
    assert result.returncode == 0, result.stderr
    assert "logs: not included: journalctl is not on this machine" in result.stdout
    journal = bundle_members(output)["journal.txt"]
    assert "journalctl -u edge-agent" in journal and "wherever its stderr went" in journal
