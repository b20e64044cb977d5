"""A real Mosquitto on a free loopback port with its own config, for demos and tests."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from devkit.pki import DevPki

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


class BrokerUnavailable(RuntimeError):
    """Mosquitto is missing or would not start; the message says what to do."""


def free_port() -> int:
    """A loopback TCP port that is free now, for a server about to be started on it.

    Drawn from below the kernel's ephemeral range when there is room: a port from that range
    can go to some process's outgoing connection between this probe and the server's bind,
    and then the server fails (gpsd even keeps running, on IPv6 only) while its clients
    connect to a stranger.
    """
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = LOWEST_PORT
    below = range(LOWEST_PORT, first_ephemeral)
    for port in [*random.sample(below, min(len(below), 20)), 0]:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free loopback port")


APT_LOCK_WAIT = 300


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def ensure_mosquitto() -> str:
    """The mosquitto binary; installs the Debian package when missing and running as root."""
    found = find_mosquitto()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BrokerUnavailable("mosquitto is not installed: run `sudo apt-get install "
                                "mosquitto` (the broker binary is enough; no service needed)")
    log.warning("installing the Debian package mosquitto (waiting up to %d s for apt's lock "
                "if another apt or unattended-upgrades holds it)", APT_LOCK_WAIT)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh machine often runs unattended-upgrades at boot: wait for dpkg's lock.
    apt = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    install = [*apt, "install", "-y", "-q", "--no-install-recommends", "mosquitto"]
    if subprocess.run(install, env=environment, capture_output=True).returncode != 0:
        subprocess.run([*apt, "update", "-q"], env=environment, capture_output=True)
        result = subprocess.run(install, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BrokerUnavailable(
                f"apt-get install mosquitto failed ({reason}); install it yourself "
                "(sudo apt-get install mosquitto) and run this again")
    found = find_mosquitto()
    if not found:
        raise BrokerUnavailable("mosquitto was installed but its binary is not on PATH")
    return found


class MosquittoBroker:
    """Mosquitto with mutual TLS (a DevPki) or, without one, plaintext and anonymous.

    With `persistence`, sessions and queued QoS 1 messages survive `restart()` (as a real
    backend broker's do), so a subscriber with a persistent session misses nothing.
    """

    def __init__(self, workdir: Path, pki: DevPki | None, *, port: int | None = None,
                 persistence: bool = False, acl: str | None = None,
                 anonymous: bool = True) -> None:
        self.workdir = workdir
        self.pki = pki
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = pki is not None
        self.persistence = persistence
        self.acl = acl  # the text of a Mosquitto acl_file; None: every client may do anything
        self.anonymous = anonymous  # without a PKI: False refuses every client in its CONNACK
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _config(self) -> str:
        lines = [f"listener {self.port} {self.host}", "per_listener_settings true",
                 f"log_dest file {self.log_path}", "log_type error", "log_type warning",
                 "log_type notice", "log_type information", "connection_messages true",
                 f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.workdir}/", "autosave_interval 1",
                 "max_queued_messages 100000"]
        if os.geteuid() == 0:
            lines.append("user root")  # it drops privileges before reading the keys otherwise
        if self.pki is None:
            lines.append(f"allow_anonymous {'true' if self.anonymous else 'false'}")
        else:
            lines += [f"cafile {self.pki.ca_cert}", f"certfile {self.pki.server.cert}",
                      f"keyfile {self.pki.server.key}", "require_certificate true",
                      "use_identity_as_username true", "tls_version tlsv1.2",
                      "allow_anonymous false"]
        if self.acl is not None:
            lines.append(f"acl_file {self.workdir / 'acl'}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        binary = ensure_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(self._config())
        if self.acl is not None:
            (self.workdir / "acl").write_text(self.acl)
        self._process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() \
            else "(no log)"
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not start on {self.host}:{self.port}:\n{tail}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused broker would not see SIGTERM
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def set_acl(self, acl: str) -> None:
        """Replace the ACL and have the running broker reload it (SIGHUP)."""
        self.acl = acl
        (self.workdir / "acl").write_text(acl)
        if self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is read or answered,
        as when a cellular link stalls."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
