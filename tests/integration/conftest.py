"""Fixtures of the diagnostics tests: a running agent with a reachable control socket, and
throwaway users in and out of its diagnostics group."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.helpers.agent_setup import REPO, write_agent_config
from tests.helpers.support import require_tool, wait_until

UNIT = REPO / "systemd" / "edge-agent.service"


def runtime_directory_mode() -> int:
    """The mode systemd gives /run/edge-agent, from the unit's RuntimeDirectoryMode=."""
    found = re.search(r"^RuntimeDirectoryMode=([0-7]+)$", UNIT.read_text(), re.MULTILINE)
    assert found, "the unit sets no RuntimeDirectoryMode"
    return int(found.group(1), 8)


@pytest.fixture
def running_agent(tmp_path, mosquitto, dev_pki, diag_group):
    """The agent on the bundled drive at 4x; its control socket in a folder that
    other (throwaway) users can reach, as /run/edge-agent would be."""
    control_dir = Path(tempfile.mkdtemp(prefix="edge-agent-control-", dir="/tmp"))
    os.chmod(control_dir, runtime_directory_mode())  # root's, like /run/edge-agent's folder
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    config = write_agent_config(tmp_path, port=mosquitto.port, tls=dev_pki.client("demo-0001"),
                                speed=4.0, window=5.0,
                                extra=f'\n[control]\nsocket = "{control_dir / "control.sock"}"\n'
                                      f'group = "{diag_group}"\n')
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



@pytest.fixture
def diag_group() -> str:
    """The agent's diagnostics group in these tests: a name of its own for each test, so that
    tests running at once (other checkouts, too) never share or delete each other's group."""
    return f"eadg{uuid.uuid4().hex[:8]}"


@pytest.fixture
def throwaway_users(diag_group):
    """A user in the diagnostics group and one outside it, the group created for the test;
    all three deleted after it. Needs root (useradd): skipped otherwise, failed under
    AGENT_REQUIRE_SYSTEM=1. Ask for it before running_agent, which gives the socket to the
    group when it starts."""
    if os.geteuid() != 0:
        message = "creating throwaway users and groups needs root"
        if os.environ.get("AGENT_REQUIRE_SYSTEM") == "1":
            pytest.fail(f"{message}; AGENT_REQUIRE_SYSTEM=1 forbids skipping")
        pytest.skip(message)
    for tool in ("useradd", "groupadd", "userdel", "groupdel", "runuser"):
        require_tool(tool)
    suffix = uuid.uuid4().hex[:6]
    member, outsider = f"eadiag{suffix}", f"eaout{suffix}"
    subprocess.run(["groupadd", diag_group], check=True)
    try:
        subprocess.run(["useradd", "-M", "-G", diag_group, member], check=True)
        subprocess.run(["useradd", "-M", outsider], check=True)
        yield member, outsider
    finally:
        for user in (member, outsider):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", diag_group], check=False, capture_output=True)
