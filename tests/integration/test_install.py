"""tools/install into a scratch root: a real virtualenv, real systemd-sysusers/-tmpfiles, twice
(the second run changes nothing), then --uninstall and --uninstall --purge."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from agent.installer import unit_text
from tests.support import require_tool

REPO = Path(__file__).resolve().parents[2]


def install(root: Path, *extra: str) -> dict:
    result = subprocess.run([str(REPO / "tools" / "install"), "--root", str(root), "--json",
                             *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def passwd_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("tools/install needs root")
    for tool in ("systemd-sysusers", "systemd-tmpfiles", "userdel", "groupdel"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("root")
    first = install(root)
    assert first["changed"]
    return root


def test_install_lays_out_a_service(installed: Path):
    root = installed
    unit = (root / "etc/systemd/system/edge-agent.service").read_text()
    assert "ExecStart=/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/config.toml" \
        in unit
    assert (root / "usr/lib/sysusers.d/edge-agent.conf").exists()
    assert (root / "usr/lib/tmpfiles.d/edge-agent.conf").exists()
    user = passwd_entry(root, "edge-agent")
    assert user is not None and user[6] == "/usr/sbin/nologin"
    key = root / "etc/edge-agent/keys/vehicle.key"
    info = key.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == int(user[2])
    assert stat.S_IMODE((root / "etc/edge-agent").stat().st_mode) == 0o750
    config = (root / "etc/edge-agent/config.toml").read_text()
    assert 'directory = "/var/lib/edge-agent"' in config
    assert os.readlink(root / "usr/local/bin/edge-agent") == "/opt/edge-agent/bin/edge-agent"


def test_installed_program_checks_the_installed_config(installed: Path):
    program = installed / "opt/edge-agent/bin/edge-agent"
    result = subprocess.run([str(program), "diag", "config", "check", "--json",
                             str(installed / "etc/edge-agent/config.toml")],
                            capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["valid"] is True


def test_second_run_changes_nothing_and_keeps_an_edited_config(installed: Path):
    config = installed / "etc/edge-agent/config.toml"
    before = {path: path.read_bytes() for path in (installed / "etc").rglob("*") if path.is_file()}
    again = install(installed)
    assert not again["changed"], [s for s in again["steps"] if s["action"] != "unchanged"]
    after = {path: path.read_bytes() for path in (installed / "etc").rglob("*") if path.is_file()}
    assert before == after

    config.write_text(config.read_text() + "\n# the technician's change\n")
    edited = install(installed)
    assert {"action": "kept", "what": str(config),
            "detail": "edited; the new default is config.toml.new"} in edited["steps"]
    assert config.read_text().endswith("# the technician's change\n")
    assert (installed / "etc/edge-agent/config.toml.new").exists()


def test_uninstall_keeps_config_and_state_then_purge_removes_everything(installed: Path):
    state = installed / "var/lib/edge-agent"
    state.mkdir(parents=True, exist_ok=True)
    (state / "spool.sqlite").write_bytes(b"unsent batches")
    install(installed, "--uninstall")
    for gone in ("etc/systemd/system/edge-agent.service", "usr/lib/sysusers.d/edge-agent.conf",
                 "usr/lib/tmpfiles.d/edge-agent.conf", "opt/edge-agent"):
        assert not (installed / gone).exists(), gone
    assert not (installed / "usr/local/bin/edge-agent").is_symlink()
    assert (installed / "etc/edge-agent/config.toml").exists()
    assert (state / "spool.sqlite").read_bytes() == b"unsent batches"

    again = install(installed, "--uninstall")
    assert not again["changed"]

    install(installed, "--uninstall", "--purge")
    assert not (installed / "etc/edge-agent").exists() and not state.exists()
    assert passwd_entry(installed, "edge-agent") is None


def test_unit_follows_the_prefix():
    text = unit_text("/usr/local/lib/edge-agent")
    assert "ExecStart=/usr/local/lib/edge-agent/bin/edge-agent run" in text
    assert "/opt/edge-agent" not in text
