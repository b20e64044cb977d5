"""tools/install into a scratch root: a real virtualenv, real systemd-sysusers/-tmpfiles, twice
(the second run changes nothing), then --uninstall and --uninstall --purge. The installed program
runs with the scratch root as its / (chroot), as it will once the root is an image on a vehicle."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from agent.wire.keys import key_id, load_public_key
from tests.helpers.support import require_tool
from tools.installer import unit_text

REPO = Path(__file__).resolve().parents[2]
# What a Debian 12 base image has at its top: merged /usr.
MERGED_USR = ("bin", "lib", "lib64", "sbin")


def install(root: Path, *extra: str) -> dict:
    result = subprocess.run([str(REPO / "tools" / "install"), "--root", str(root), "--json",
                             *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def in_image(root: Path, *command: str) -> subprocess.CompletedProcess:
    """Run `command` with `root` as /, in a private mount namespace (nothing shows on the host).

    The image's /usr is the Debian base's plus what the installer put there (the command link,
    sysusers and tmpfiles files), so the tree's /usr is laid read-only over the host's (same
    Debian release, as --root requires); a plain bind mount of the host's /usr would hide the
    installer's own files. The program needs nothing else mounted (no /proc, no /dev)."""
    script = 'mount -t overlay overlay -o "lowerdir=$0/usr:/usr" "$0/usr" && exec chroot "$0" "$@"'
    return subprocess.run([require_tool("unshare"), "--mount", "--", "sh", "-c", script,
                           str(root), *command], capture_output=True, text=True, timeout=120,
                          cwd="/")


def passwd_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("tools/install needs root")
    for tool in ("systemd-sysusers", "systemd-tmpfiles", "userdel", "groupdel", "unshare",
                 "mount", "chroot"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("root")
    for name in MERGED_USR:
        (root / name).symlink_to(f"usr/{name}")
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


def test_installed_tree_names_no_build_folder(installed: Path):
    build_path = str(installed).encode()
    naming = []
    for folder, folders, files in os.walk(installed):
        for name in [*folders, *files]:
            path = Path(folder) / name
            if path.is_symlink():
                content = os.readlink(path).encode()
            elif path.is_file():
                content = path.read_bytes()
            else:
                continue
            if build_path in content:
                naming.append(str(path.relative_to(installed)))
    assert naming == []
    venv = installed / "opt/edge-agent"
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    assert (venv / "bin/edge-agent").read_text().startswith("#!/opt/edge-agent/bin/python\n")
    assert "home = /usr/bin\n" in (venv / "pyvenv.cfg").read_text()


def test_installed_program_runs_with_the_tree_as_root(installed: Path):
    help_text = in_image(installed, "/opt/edge-agent/bin/edge-agent", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: edge-agent" in help_text.stdout

    check = in_image(installed, "/usr/local/bin/edge-agent", "config", "check", "--json",
                     "/etc/edge-agent/config.toml")
    assert check.returncode == 0, check.stderr + check.stdout
    assert json.loads(check.stdout)["valid"] is True

    # The key the installer made, read back by the installed program (its cryptography wheel).
    kid = in_image(installed, "/usr/local/bin/edge-agent", "keys", "id",
                   "/etc/edge-agent/keys/vehicle.pub")
    assert kid.returncode == 0, kid.stderr
    public = load_public_key(installed / "etc/edge-agent/keys/vehicle.pub")
    assert kid.stdout.strip() == key_id(public).hex()


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


def test_a_missing_interpreter_names_its_package(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("tools/install needs root")
    result = subprocess.run([str(REPO / "tools" / "install"), "--root", str(tmp_path), "--json",
                             "--python", "/nonexistent/python3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert "/nonexistent/python3 is missing" in error and "python3-venv" in error
    assert not (tmp_path / "opt").exists()


def test_unit_follows_the_prefix():
    text = unit_text("/usr/local/lib/edge-agent")
    assert "ExecStart=/usr/local/lib/edge-agent/bin/edge-agent run" in text
    assert "/opt/edge-agent" not in text
