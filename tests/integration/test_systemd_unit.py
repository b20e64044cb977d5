"""The unit file, checked by systemd's own tools (no systemd needs to be running)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.runtime.malloc import MALLOC_SETTINGS
from tests.helpers.support import require_tool

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edge-agent.service"


def unit_with_local_binary(tmp_path: Path) -> Path:
    """The shipped unit, pointing ExecStart at this environment's edge-agent."""
    binary = Path(sys.executable).parent / "edge-agent"
    assert binary.exists(), "install the package (tools/test does) so edge-agent exists"
    text = UNIT.read_text().replace("/opt/edge-agent/bin/edge-agent", str(binary))
    unit = tmp_path / "edge-agent.service"
    unit.write_text(text)
    return unit


def test_unit_verifies_clean(tmp_path):
    analyze = require_tool("systemd-analyze")
    result = subprocess.run([analyze, "verify", str(unit_with_local_binary(tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_hardening_exposure_is_at_most_2(tmp_path):
    analyze = require_tool("systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=yes", str(UNIT)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for edge-agent.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_declares_what_the_agent_relies_on():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=edge-agent",
                 "RuntimeDirectory=edge-agent", "ConfigurationDirectory=edge-agent",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "User=edge-agent",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_CAN AF_NETLINK"):
        assert line in text, line


def test_unit_gives_the_agent_its_malloc_settings():
    """One arena for the main thread and one for the rest, and a seal's arrays given back
    when freed (docs/performance.md, "Where the memory goes"); the memory bench starts the
    agent with the same Environment= lines."""
    settings = dict(line.removeprefix("Environment=").split("=", 1)
                    for line in UNIT.read_text().splitlines() if line.startswith("Environment="))
    assert {name: settings.get(name) for name in MALLOC_SETTINGS} == {
        name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()}
