"""The field tech's view: `edge-agent diag` against a running daemon, sd_notify, permissions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.agent_setup import REPO
from tests.helpers.support import require_tool, wait_until


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "diag", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd="/")


def test_diag_commands_report_real_values(running_agent):
    socket_args = ("--socket", str(running_agent["socket"]), "--config",
                   str(running_agent["config"]))

    def status():
        result = diag("status", "--json", *socket_args)
        document = json.loads(result.stdout)
        awake = document["sources"][0]["frames_per_s"] > 100  # the drive starts parked
        return document if document["uplink"]["acked"] >= 1 and awake else None

    document = wait_until(status, 60)
    assert document, diag("status", *socket_args).stdout
    source = document["sources"][0]
    assert source["name"] == "can0" and source["frames"] > 100 and source["frames_per_s"] > 100
    assert document["uplink"]["connected"] and document["uplink"]["tls"]
    assert document["batches"]["signals"] >= 800

    buses = json.loads(diag("buses", "--json", *socket_args).stdout)
    assert len(buses[0]["filters"]) > 50 and buses[0]["error_frames"] == 0

    rows = wait_until(lambda: json.loads(diag("signals", "--json", *socket_args,
                                            "can0.TPMS_Status.*").stdout), 30)
    assert {row["signal"].split(".")[-1] for row in rows} >= {
        "TirePressure_FL", "TirePressure_RR", "TireTemp_FL"}
    assert all(row["age_s"] < 5 for row in rows)
    assert {row["unit"] for row in rows if "Pressure" in row["signal"]} == {"kPa"}

    human = diag("status", *socket_args)
    assert "vehicle demo-0001" in human.stdout and "connected" in human.stdout

    queue = json.loads(diag("queue", "--json", *socket_args).stdout)
    assert queue["max_bytes"] > 0 and queue["evicted"] == 0
    assert diag("flush", *socket_args).stdout.strip() == "sealed the open window"

    live = diag("live", "--json", "--count", "2", "--interval", "0.5", *socket_args,
                "can0.ESP_VehicleSpeed.VehicleSpeed")
    assert [len(json.loads(line)["signals"]) for line in live.stdout.splitlines()] == [1, 1]

    selftest = json.loads(diag("selftest", "--json", *socket_args).stdout)
    verdicts = {check["name"]: check["verdict"] for check in selftest["checks"]}
    assert verdicts["broker"] == "ok" and verdicts["signing key"] == "ok"
    assert verdicts["daemon"] in ("ok", "warn") and verdicts["config"] == "ok"


def test_watchdog_pings_while_alive_and_stopping_on_sigterm(running_agent):
    received = running_agent["received"]
    running_agent["messages"].clear()
    assert wait_until(lambda: [m for m in running_agent["messages"] if m == b"WATCHDOG=1"]
                    if received(b"WATCHDOG=1") else None, 10)
    process = running_agent["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert received(b"STOPPING=1")
    assert "sealed batch" in running_agent["log"].read_text()


def test_not_running_is_said_plainly_and_offline_checks_still_run(tmp_path):
    result = diag("status", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 3 and "the agent is not running" in result.stderr
    selftest = diag("selftest", "--json", "--no-network", "--socket", str(tmp_path / "x"),
                    "--config", str(REPO / "config.toml"))
    checks = {c["name"]: c for c in json.loads(selftest.stdout)["checks"]}
    assert checks["daemon"]["verdict"] == "warn" and checks["dbc can0"]["verdict"] == "ok"


RAW_REQUEST = """
import json, socket, sys
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    client.connect(sys.argv[1])
except PermissionError:
    print("connect: permission denied")
    sys.exit(0)
client.sendall(json.dumps({"command": sys.argv[2]}).encode() + b"\\n")
print(client.makefile().readline().strip())
"""


def raw_request_as(user: str, path: Path, command: str) -> str:
    """The control protocol spoken by another user, with the system's own Python (the
    project's virtualenv lives under root's home, which other users cannot enter)."""
    result = subprocess.run([require_tool("runuser"), "-u", user, "--",
                             require_tool("/usr/bin/python3"), "-c", RAW_REQUEST, str(path),
                             command], capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_permissions_follow_the_group_and_state_changes_need_root(throwaway_users,
                                                                  running_agent):
    member, outsider = throwaway_users
    path = running_agent["socket"]
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    allowed = json.loads(raw_request_as(member, path, "status"))
    assert allowed["ok"] and allowed["result"]["vehicle"] == "demo-0001"
    refused = json.loads(raw_request_as(member, path, "flush"))
    assert not refused["ok"] and "needs root or the service user" in refused["error"]
    assert raw_request_as(outsider, path, "status") == "connect: permission denied"


def test_signal_globs_without_the_source_and_globs_matching_nothing(running_agent):
    """`diag signals 'ESP_*'` finds can0's ESP messages (the glob also matches the key without
    its source); a glob that matches nothing says so on stderr and exits 1, not an empty
    table and 0. `flush --json` answers with an object, not a bare string."""
    socket_args = ("--socket", str(running_agent["socket"]), "--config",
                   str(running_agent["config"]))

    def esp_rows():
        result = diag("signals", "--json", *socket_args, "ESP_*")
        return json.loads(result.stdout) if result.returncode == 0 else None

    rows = wait_until(esp_rows, 60)
    assert rows and {row["signal"].split(".")[1] for row in rows} >= {"ESP_VehicleSpeed"}
    assert all(row["signal"].startswith("can0.ESP_") for row in rows)
    assert all(row["age_s"] >= 0 for row in rows)
    human = diag("signals", *socket_args, "ESP_VehicleSpeed.VehicleSpeed")
    assert human.returncode == 0 and "can0.ESP_VehicleSpeed.VehicleSpeed" in human.stdout

    for extra in ((), ("--json",)):
        nothing = diag("signals", *extra, *socket_args, "NoSuchMessage_*")
        assert nothing.returncode == 1
        assert "no sampled signal matches 'NoSuchMessage_*'" in nothing.stderr

    flushed = json.loads(diag("flush", "--json", *socket_args).stdout)
    assert flushed["running"] and flushed["command"] == "flush"
    assert flushed["result"] in ("sealed the open window", "nothing to seal yet")


def diag_as(user: str, *args: str) -> subprocess.CompletedProcess:
    """`edge-agent diag` run by another user, with the system's Python 3 (the virtualenv's
    interpreter may live under root's home, which other users cannot enter) and the
    virtualenv's packages."""
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    return subprocess.run([require_tool("runuser"), "-u", user, "--", "env",
                           f"PYTHONPATH={REPO}:{site}", require_tool("/usr/bin/python3"), "-m",
                           "agent", "diag", *args], capture_output=True, text=True, timeout=60,
                          cwd="/")


def test_a_group_member_reads_through_the_units_runtime_folder_and_an_outsider_is_denied(
        throwaway_users, running_agent):
    """The socket's folder has the unit's RuntimeDirectoryMode and is root's: a member of the
    diagnostics group gets the status; a user outside it is told "permission denied" and what
    to do, with exit 4 and "running": null, never "the agent is not running"."""
    member, outsider = throwaway_users
    socket_args = ("--socket", str(running_agent["socket"]),
                   "--config", str(running_agent["config"]))
    allowed = diag_as(member, "status", "--json", *socket_args)
    assert allowed.returncode in (0, 1), allowed.stderr
    assert json.loads(allowed.stdout)["vehicle"] == "demo-0001"

    denied = diag_as(outsider, "status", *socket_args)
    assert denied.returncode == 4, denied.stderr
    assert "permission denied" in denied.stderr and "join the group" in denied.stderr
    assert "(or run as root)" in denied.stderr and "not running" not in denied.stderr
    denied = diag_as(outsider, "status", "--json", *socket_args)
    document = json.loads(denied.stdout)
    assert denied.returncode == 4 and document["running"] is None and document["denied"]

    flush = diag_as(member, "flush", *socket_args)  # the daemon's own refusal: also denied
    assert flush.returncode == 4 and "needs root or the service user" in flush.stderr
