"""tools/install: put the agent on a unit the way systemd expects it, or take it off again.

Standard library only: it runs with the system's python3 before the package is installed.
Every step compares before it writes, so running it again changes nothing and says so. The
config the operator edited is never overwritten (the new default goes beside it as
`config.toml.new`), and `--uninstall` keeps the config and the state folder (which may hold
batches not yet sent) unless `--purge` is given.

Layout, under `--root` (default `/`, another folder for images and tests):
  {prefix}/                      virtualenv with the agent (the target's python3); README.md
  /usr/local/bin/edge-agent      symlink to {prefix}/bin/edge-agent (for field techs)
  /etc/systemd/system/edge-agent.service
  /usr/lib/sysusers.d/edge-agent.conf, /usr/lib/tmpfiles.d/edge-agent.conf
  /etc/edge-agent/config.toml    the default config, state in /var/lib/edge-agent
  /etc/edge-agent/dbc/           the example database and bundled drive
  /etc/edge-agent/keys/vehicle.key  made on first install, mode 0600, owned by the service user

`--root` builds for a target with the build host's architecture and Debian release: the
virtualenv links to the same `/usr/bin/python3` and holds compiled wheels for this machine. Every
path written into it (script shebangs, pyvenv.cfg, activate scripts, the paths in compiled
bytecode) is the path on the target, never the folder being built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE_USER = "edge-agent"
UNIT_NAME = "edge-agent.service"
STATE_DIRECTORY = "/var/lib/edge-agent"
DEFAULT_PREFIX = "/opt/edge-agent"
# Debian's own interpreter: the unit runs with ProtectHome=yes, so one under /root or /home (pyenv)
# is invisible to the service, and an image has only the base system's.
DEFAULT_PYTHON = "/usr/bin/python3"
HIDDEN_FROM_SERVICE = ("/root", "/home", "/run/user")
# Source files whose change means the installed package is out of date.
PACKAGE_INPUTS = ("pyproject.toml", "agent")


NO_CHANGE = ("unchanged", "kept", "absent", "checked")


class InstallError(Exception):
    """A step that cannot be done; the message says what to do about it."""


@dataclass
class Report:
    """What each step did, for the operator and for `--json`."""

    steps: list[dict[str, str]] = field(default_factory=list)
    quiet: bool = False

    def step(self, action: str, what: str, detail: str = "") -> None:
        self.steps.append({"action": action, "what": what, "detail": detail})
        if not self.quiet:
            print(f"{action:>9}  {what}{'  (' + detail + ')' if detail else ''}", flush=True)

    @property
    def changed(self) -> bool:
        return any(step["action"] not in NO_CHANGE for step in self.steps)


@dataclass(frozen=True)
class Layout:
    root: Path
    prefix: str
    python: Path = Path(DEFAULT_PYTHON)

    def at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def venv(self) -> Path:
        """The virtualenv as this machine reaches it (inside --root)."""
        return self.at(self.prefix)

    @property
    def target_venv(self) -> Path:
        """The virtualenv where the target will have it, once --root is its /."""
        return Path(self.prefix)

    @property
    def unit(self) -> Path:
        return self.at(f"/etc/systemd/system/{UNIT_NAME}")

    @property
    def sysusers(self) -> Path:
        return self.at("/usr/lib/sysusers.d/edge-agent.conf")

    @property
    def tmpfiles(self) -> Path:
        return self.at("/usr/lib/tmpfiles.d/edge-agent.conf")

    @property
    def command_link(self) -> Path:
        return self.at("/usr/local/bin/edge-agent")

    @property
    def config_dir(self) -> Path:
        return self.at("/etc/edge-agent")

    @property
    def state_dir(self) -> Path:
        return self.at(STATE_DIRECTORY)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/install",
        description="Install the edge agent as a hardened systemd service (idempotent), or "
                    "remove it with --uninstall. Run as root.")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="install into this folder instead of / (an image being built); "
                             "the image must have this machine's architecture and Debian "
                             "release, since it runs the same python3 and compiled wheels")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"where the virtualenv goes (default {DEFAULT_PREFIX})")
    parser.add_argument("--python", type=Path, default=Path(DEFAULT_PYTHON), metavar="PATH",
                        help="the interpreter the virtualenv uses, as the target has it "
                             f"(default {DEFAULT_PYTHON}, Debian's python3)")
    parser.add_argument("--uninstall", action="store_true",
                        help="remove the service and the program; keep config and state")
    parser.add_argument("--purge", action="store_true",
                        help="with --uninstall: also remove /etc/edge-agent, the state folder "
                             "(unsent batches!) and the service user and group")
    parser.add_argument("--enable", action="store_true",
                        help="enable and start the service (when systemd runs this machine)")
    parser.add_argument("--json", action="store_true", help="print the steps as JSON")
    args = parser.parse_args(argv)
    if args.purge and not args.uninstall:
        parser.error("--purge only goes with --uninstall")
    # Both are written into the installed files as they are, so they must not depend on the
    # folder this was started from.
    if not args.prefix.startswith("/"):
        parser.error("--prefix must be an absolute path")
    if not args.python.is_absolute():
        parser.error("--python must be an absolute path (the one the target has)")
    layout = Layout(args.root.resolve(), str(Path(args.prefix)), args.python)
    report = Report(quiet=args.json)
    try:
        if os.geteuid() != 0:
            raise InstallError("run as root: the installer creates a system user and writes "
                               "to /etc, /usr/lib and the prefix")
        if args.uninstall:
            uninstall(layout, report, purge=args.purge)
        else:
            install(layout, report, enable=args.enable)
    except InstallError as exc:
        print(f"tools/install: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "steps": report.steps}))
        return 1
    if args.json:
        print(json.dumps({"ok": True, "changed": report.changed, "steps": report.steps}))
    elif not report.changed:
        print("nothing to do: already installed as asked")
    elif not args.uninstall:
        print(NEXT_STEPS)
    return 0


NEXT_STEPS = """
Next:
  1. give /etc/edge-agent/keys/vehicle.pub to the backend (it binds the key to this vehicle)
  2. put the broker's CA and this vehicle's client certificate and key in /etc/edge-agent/tls/
     (ca.crt, vehicle.crt, vehicle.key; readable by group edge-agent)
  3. edit /etc/edge-agent/config.toml: [vehicle] id, [[sources]] (the real buses), [uplink] host
  4. edge-agent diag selftest      (every check should say ok)
  5. systemctl enable --now edge-agent   (or run tools/install --enable)
  Field techs: add them to group edge-agent-diag for `edge-agent diag`."""


def install(layout: Layout, report: Report, *, enable: bool = False) -> None:
    install_package(layout, report)
    write_file(layout.unit, unit_text(layout.prefix), 0o644, report)
    write_file(layout.sysusers, (REPO / "systemd" / "edge-agent.sysusers").read_text(), 0o644,
               report)
    write_file(layout.tmpfiles, (REPO / "systemd" / "edge-agent.tmpfiles").read_text(), 0o644,
               report)
    # Both are idempotent: they create only what is missing.
    run_tool(["systemd-sysusers", f"--root={layout.root}", str(layout.sysusers)],
             "users and groups (systemd-sysusers)", report, action="checked")
    run_tool(["systemd-tmpfiles", f"--root={layout.root}", "--create", str(layout.tmpfiles)],
             "config folders (systemd-tmpfiles)", report, action="checked")
    install_config(layout, report)
    install_signing_key(layout, report)
    link_command(layout, report)
    if systemd_running(layout):
        run_tool(["systemctl", "daemon-reload"], "systemctl daemon-reload", report)
        if enable:
            run_tool(["systemctl", "enable", "--now", UNIT_NAME], "systemctl enable --now",
                     report)
    elif enable:
        report.step("skipped", "systemctl enable", "systemd is not running this machine/root")


def uninstall(layout: Layout, report: Report, *, purge: bool) -> None:
    if systemd_running(layout):
        run_tool(["systemctl", "disable", "--now", UNIT_NAME], "systemctl disable --now",
                 report, check=False)
    for path in (layout.unit, layout.sysusers, layout.tmpfiles, layout.command_link):
        remove(path, report)
    remove(layout.venv, report)
    if systemd_running(layout):
        run_tool(["systemctl", "daemon-reload"], "systemctl daemon-reload", report)
    if not purge:
        for kept in (layout.config_dir, layout.state_dir):
            if kept.exists():
                report.step("kept", str(kept), "--purge removes it")
        return
    remove(layout.config_dir, report)
    remove(layout.state_dir, report)
    remove_account(layout, report)


def install_package(layout: Layout, report: Report) -> None:
    """A virtualenv at the prefix with this source tree installed (not editable)."""
    python = layout.venv / "bin" / "python"
    make_virtualenv(layout, report)
    stamp = layout.venv / ".edge-agent-source"
    digest = source_digest()
    if stamp.exists() and stamp.read_text() == digest:
        report.step("unchanged", f"package in {layout.venv}")
    else:
        # pip would compile with the build folder in every code object's file name; compileall
        # below names the target's path instead, which is what tracebacks on the vehicle show.
        run_tool([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  "--no-compile", str(REPO)], f"package into {layout.venv}", report)
        # The service cannot write bytecode (ProtectSystem=strict), so it is made here, also for
        # pip and setuptools that venv compiled with the build path. A file that does not compile
        # is skipped by Python at import too, so that is not an install failure (nor is it for
        # pip).
        run_tool([str(python), "-m", "compileall", "-q", "-f",
                  "-d", str(layout.target_venv / "lib"), str(layout.venv / "lib")],
                 f"bytecode in {layout.venv}", report, check=False)
        stamp.write_text(digest)
    relocate(layout, report)
    write_file(layout.venv / "README.md", (REPO / "README.md").read_text(), 0o644, report)


def make_virtualenv(layout: Layout, report: Report) -> None:
    """The virtualenv, made with the target's interpreter; one made with another is replaced
    (an install from before --python used whatever python3 ran this, e.g. pyenv's)."""
    interpreter = layout.python
    if not interpreter.exists():
        raise InstallError(f"{interpreter} is missing: on Debian apt-get install python3 "
                           "python3-venv, or name the target's interpreter with --python")
    real = Path(os.path.realpath(interpreter))
    hidden = next((top for top in HIDDEN_FROM_SERVICE if real.is_relative_to(top)), None)
    if hidden is not None:
        raise InstallError(f"{interpreter} is under {hidden}, which the service cannot see "
                           f"(ProtectHome=yes): use {DEFAULT_PYTHON}")
    python = layout.venv / "bin" / "python"
    if python.exists() and os.path.realpath(python) == os.path.realpath(interpreter):
        return
    if python.exists() or python.is_symlink():
        report.step("replacing", str(layout.venv),
                    f"made with {os.path.realpath(python)}, not {interpreter}")
        shutil.rmtree(layout.venv)
    if subprocess.run([str(interpreter), "-c", "import ensurepip"],
                      capture_output=True).returncode != 0:
        raise InstallError(f"{interpreter} cannot make a virtualenv (no ensurepip): on Debian "
                           "apt-get install python3-venv")
    run_tool([str(interpreter), "-m", "venv", str(layout.venv)], f"virtualenv {layout.venv}",
             report)


def relocate(layout: Layout, report: Report) -> None:
    """Name the target's prefix wherever venv and pip wrote the build folder's (script
    shebangs, pyvenv.cfg, activate scripts): under --root they differ, and the image must run
    once the root is its /. A no-op for an install into /."""
    built, target = str(layout.venv).encode(), str(layout.target_venv).encode()
    if built == target:
        return
    candidates = [layout.venv / "pyvenv.cfg", *sorted((layout.venv / "bin").iterdir())]
    changed = 0
    for path in candidates:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if built in content:
            mode = stat.S_IMODE(path.stat().st_mode)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(content.replace(built, target))
            partial.chmod(mode)
            partial.replace(path)
            changed += 1
    if changed:
        report.step("relocated", f"{changed} files in {layout.venv}",
                    f"{layout.venv} -> {layout.target_venv}")


def source_digest() -> str:
    digest = hashlib.sha256()
    for name in PACKAGE_INPUTS:
        top = REPO / name
        files = sorted(top.rglob("*")) if top.is_dir() else [top]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def unit_text(prefix: str) -> str:
    text = (REPO / "systemd" / UNIT_NAME).read_text()
    return text.replace(f"{DEFAULT_PREFIX}/", f"{prefix.rstrip('/')}/")


def default_config_text() -> str:
    """The repository's documented config, with the state folder systemd gives the service."""
    text = (REPO / "config.toml").read_text()
    return text.replace('directory = "state"', f'directory = "{STATE_DIRECTORY}"')


def install_config(layout: Layout, report: Report) -> None:
    dbc_dir = layout.config_dir / "dbc"
    for source in sorted((REPO / "dbc").iterdir()):
        target = dbc_dir / source.name
        if target.exists():
            report.step("kept" if target.read_bytes() != source.read_bytes() else "unchanged",
                        str(target))
            continue
        if not dbc_dir.exists():
            dbc_dir.mkdir(mode=0o750, parents=True)
            chown(dbc_dir, layout, "root", SERVICE_USER)
        shutil.copyfile(source, target)
        target.chmod(0o640)
        chown(target, layout, "root", SERVICE_USER)
        report.step("installed", str(target))
    config = layout.config_dir / "config.toml"
    text = default_config_text()
    if not config.exists():
        write_file(config, text, 0o640, report)
        chown(config, layout, "root", SERVICE_USER)
    elif config.read_text() == text:
        report.step("unchanged", str(config))
    else:
        report.step("kept", str(config), "edited; the new default is config.toml.new")
        write_file(config.with_name("config.toml.new"), text, 0o640, report)


def install_signing_key(layout: Layout, report: Report) -> None:
    key = layout.config_dir / "keys" / "vehicle.key"
    if key.exists():
        report.step("kept", str(key))
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    # Through the venv's python, not the script: under --root the shebang names the target's
    # path, which this machine need not have. -B: no bytecode naming the build folder.
    run_tool([str(layout.venv / "bin" / "python"), "-B", str(layout.venv / "bin" / "edge-agent"),
              "keys", "gen", "--out", str(key)], f"signing key {key}", report)
    # The service reads its own key; nobody else may (`diag selftest` checks the mode).
    chown(key, layout, SERVICE_USER, SERVICE_USER)
    key.chmod(0o600)


def link_command(layout: Layout, report: Report) -> None:
    target = Path(layout.prefix) / "bin" / "edge-agent"
    link = layout.command_link
    if link.is_symlink() and Path(os.readlink(link)) == target:
        report.step("unchanged", str(link))
        return
    if link.exists() or link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    report.step("linked", str(link), f"-> {target}")


def write_file(path: Path, text: str, mode: int, report: Report) -> None:
    if path.exists() and path.read_text() == text:
        if os.stat(path).st_mode & 0o777 != mode:
            path.chmod(mode)
            report.step("chmod", str(path), f"{mode:o}")
        else:
            report.step("unchanged", str(path))
        return
    action = "updated" if path.exists() else "installed"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.chmod(mode)
    partial.replace(path)
    report.step(action, str(path))


def remove(path: Path, report: Report) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        report.step("absent", str(path))
        return
    report.step("removed", str(path))


def remove_account(layout: Layout, report: Report) -> None:
    for tool, name in (("userdel", SERVICE_USER), ("groupdel", SERVICE_USER),
                       ("groupdel", "edge-agent-diag")):
        if account_id(layout, "passwd" if tool == "userdel" else "group", name) is None:
            report.step("absent", f"{tool[:-3]} {name}")
            continue
        run_tool([tool, f"--prefix={layout.root}", name], f"{tool} {name}", report)


def account_id(layout: Layout, database: str, name: str) -> int | None:
    """A user or group id from the target root's own /etc files (not this machine's)."""
    if name == "root":
        return 0
    try:
        lines = layout.at(f"/etc/{database}").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name:
            return int(fields[2])
    return None


def chown(path: Path, layout: Layout, user: str, group: str) -> None:
    uid = account_id(layout, "passwd", user)
    gid = account_id(layout, "group", group)
    if uid is None or gid is None:
        raise InstallError(f"user {user} or group {group} missing in {layout.at('/etc')}: "
                           "systemd-sysusers did not create them")
    os.chown(path, uid, gid)


def systemd_running(layout: Layout) -> bool:
    return layout.root == Path("/") and Path("/run/systemd/system").is_dir()


def run_tool(command: list[str], what: str, report: Report, *, check: bool = True,
             action: str = "ran") -> None:
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise InstallError(f"{command[0]} is not installed (Debian: apt-get install systemd "
                           "passwd python3-venv)")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 and check:
        raise InstallError(f"{what} failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    report.step(action, what)


if __name__ == "__main__":
    sys.exit(main())
