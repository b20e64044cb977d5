"""The field tech's view: `edge-agent diag` against a running daemon, sd_notify, permissions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.helpers.agent_setup import REPO, write_agent_config
from tests.helpers.support import require_tool, wait_until


def diag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "diag", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd="/")


@pytest.fixture
def running_agent(tmp_path, mosquitto, dev_pki):
    """The agent on the bundled drive at 4x; its control socket in a folder that
    other (throwaway) users can reach, as /run/edge-agent would be."""
    control_dir = Path(tempfile.mkdtemp(prefix="edge-agent-control-", dir="/tmp"))
    os.chmod(control_dir, 0o755)
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                speed=4.0, window=5.0,
                                extra=f'\n[control]\nsocket = "{control_dir / "control.sock"}"\n'
                                      f'group = "edge-agent-diag-test"\n')
    config.write_text(config.read_text().replace("rebase = false", "rebase = true\nloop = true"))
    log = (tmp_path / "agent.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)], stderr=log,
        env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(notify_path),
             "WATCHDOG_USEC": "2000000"})
    messages: list[bytes] = []

    def received(prefix: bytes) -> bool:
        try:
            while True:
                messages.append(notify.recv(4096))
        except TimeoutError:
            pass
        return any(m.startswith(prefix) for m in messages)

    assert wait_until(lambda: received(b"READY=1"), 60), (tmp_path / "agent.log").read_text()
    yield {"process": process, "config": config, "socket": control_dir / "control.sock",
           "received": received, "messages": messages, "log": tmp_path / "agent.log"}
    if process.poll() is None:
        process.kill()
        process.wait()
    notify.close()
    shutil.rmtree(control_dir, ignore_errors=True)


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


@pytest.fixture
def throwaway_users():
    """A user in the diagnostics group and one outside it (needs root: useradd)."""
    if os.geteuid() != 0:
        pytest.skip("creating throwaway users needs root")
    for tool in ("useradd", "groupadd", "userdel", "groupdel", "runuser"):
        require_tool(tool)
    suffix = uuid.uuid4().hex[:6]
    group, member, outsider = "edge-agent-diag-test", f"eadiag{suffix}", f"eaout{suffix}"
    subprocess.run(["groupadd", "-f", group], check=True)
    subprocess.run(["useradd", "-M", "-G", group, member], check=True)
    subprocess.run(["useradd", "-M", outsider], check=True)
    yield member, outsider
    for user in (member, outsider):
        subprocess.run(["userdel", user], check=False)


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
