"""The vcan tier: real SocketCAN vcan0/vcan1 (made by tools/vcan-test, in a VM where needed).

Every test here is marked `vcan` and deselected from the main suite. The agent runs in-process
(`build_agent` from a real config file, started and stopped as the daemon does), so tests can
read its counters and stores directly; can-utils and python-can put frames on the interfaces.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest

from agent.config.schema import load_config
from agent.runtime.daemon import Agent, build_agent
from agent.wire.keys import generate_key_pair
from tests.helpers.support import require_tool

INTERFACES = ("vcan0", "vcan1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vcan/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.vcan)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def make_interface(name: str) -> None:
    """vcan `name`, up, with mtu 72 so that it carries CAN FD frames too."""
    if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
        ip("link", "add", "dev", name, "type", "vcan")
        ip("link", "set", name, "mtu", "72")
    ip("link", "set", "up", name)


@pytest.fixture(autouse=True)
def vcan_interfaces() -> Iterator[None]:
    """vcan0 and vcan1 up before each test, and again after it (tests take them down)."""
    if shutil.which("ip") is None or not Path("/sys/class/net/vcan0").exists():
        pytest.fail("vcan0 does not exist: run this group through tools/vcan-test")
    yield
    for name in INTERFACES:
        make_interface(name)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0,
             state: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"; now: {state()}" if state else ""))
        time.sleep(0.05)


def write_config(directory: Path, sources: str, sampling: str = "") -> Path:
    """An agent config for `sources` whose batches stay in the spool (no broker listens)."""
    key = directory / "vehicle.key"
    generate_key_pair(key)
    config = directory / "agent.toml"
    config.write_text(f"""
[vehicle]
id = "vcan-0001"

{sources}

{sampling}

[batch]
window = 5.0

[keys]
signing_key = "{key}"

[uplink]
host = "127.0.0.1"
port = 9
tls = false
reconnect_min = 30.0
reconnect_max = 60.0

[state]
directory = "{directory / 'state'}"
""", encoding="utf-8")
    return config


def error_receivers(device: str) -> int:
    """Sockets on `device` that asked for error frames: python-can's buses do, by default."""
    return receivers("rcvlist_err", device)


def receivers(receive_list: str, device: str) -> int:
    """Entries for `device` in a SocketCAN receive list (/proc/net/can, once can.ko is in)."""
    path = Path("/proc/net/can") / receive_list
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if line.split()[:1] == [device])


@contextlib.contextmanager
def running_agent(config_path: Path) -> Iterator[Agent]:
    """The agent started as the daemon starts it; yielded once every bus socket is bound."""
    config = load_config(config_path)
    channels = [source.channel for source in config.sources]
    expected = {channel: error_receivers(channel) + channels.count(channel)
                for channel in channels}
    agent = build_agent(config)
    agent.start()
    try:
        wait_for(lambda: all(error_receivers(c) >= n for c, n in expected.items()),
                 f"the agent's sockets on {', '.join(channels)}")
        yield agent
    finally:
        agent.stop()


def sender(channel: str, *, fd: bool = True) -> can.BusABC:
    """A bus to send with; it asks for no error frames, so error_receivers() ignores it."""
    return can.Bus(interface="socketcan", channel=channel, fd=fd, ignore_rx_error_frames=True,
                   receive_own_messages=False)


def candump_tool() -> str:
    return require_tool("candump")
