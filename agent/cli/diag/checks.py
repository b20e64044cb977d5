"""Offline checks of an installation: they need the config file, not the running daemon."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from agent.cli.source_databases import read_databases
from agent.config.schema import AgentConfig, load_config
from agent.errors import AgentError
from agent.runtime import clock
from agent.sampling.plan import build_plan
from agent.wire.keys import load_private_key

CERT_WARN_DAYS = 30
MIN_FREE_BYTES = 50 * 2**20
EARLIEST_SANE_TIME = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # "ok" | "warn" | "fail"
    detail: str


def run_checks(config_path: Path, *, network: bool = True) -> list[Check]:
    try:
        config = load_config(config_path)
    except AgentError as exc:
        return [Check("config", "fail", str(exc))]
    checks = [Check("config", "ok", f"{config_path} is valid (version {config.version})")]
    checks += dbc_checks(config)
    checks.append(key_check(config))
    checks += certificate_checks(config)
    checks.append(clock_check())
    checks.append(disk_check(config))
    if network:
        checks.append(broker_check(config))
    return checks


def dbc_checks(config: AgentConfig) -> list[Check]:
    checks = []
    databases = {}
    for read in read_databases(config):
        if read.database is None:
            checks.append(Check(f"dbc {read.name}", "fail", str(read.error)))
            continue
        databases[read.name] = read.database
        if (loaded := read.dbc) is None:
            continue
        noted = (f", {len(loaded.warnings)} warnings (edge-agent config check lists them)"
                 if loaded.warnings else "")
        checks.append(Check(f"dbc {read.name}", "ok", f"{len(loaded.tables.messages)} "
                            f"messages, sha256 {loaded.digest.hex()[:16]}{noted}"))
    if len(databases) == len(config.sources):
        try:
            plan = build_plan(config.sampling, databases)
            checks.append(Check("sampling plan", "ok", f"{len(plan.signals)} signals"))
        except AgentError as exc:
            checks.append(Check("sampling plan", "fail", str(exc)))
    return checks


def key_check(config: AgentConfig) -> Check:
    path = config.keys.signing_key
    try:
        load_private_key(path)
    except AgentError as exc:
        return Check("signing key", "fail", str(exc))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check("signing key", "fail", f"{path} has mode {mode:o}: others can read the "
                     f"vehicle's identity; chmod 600 {path}")
    return Check("signing key", "ok", f"{path} (mode {mode:o})")


def certificate_checks(config: AgentConfig) -> list[Check]:
    uplink = config.uplink
    if not uplink.tls:
        return [Check("tls", "warn", "TLS is off: data is signed but not encrypted in transit")]
    checks = []
    for name in ("ca_cert", "cert"):
        path = getattr(uplink, name)
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            checks.append(Check(f"tls {name}", "fail", f"{path}: {exc}"))
            continue
        days = (certificate.not_valid_after_utc - datetime.now(UTC)).days
        subject = certificate.subject.rfc4514_string()
        if days < 0:
            checks.append(Check(f"tls {name}", "fail", f"{path} ({subject}) expired "
                                f"{-days} days ago"))
        elif days < CERT_WARN_DAYS:
            checks.append(Check(f"tls {name}", "warn", f"{path} ({subject}) expires in "
                                f"{days} days"))
        else:
            checks.append(Check(f"tls {name}", "ok", f"{subject}, valid {days} more days"))
    return checks


def clock_check() -> Check:
    now = time.time()
    if now < EARLIEST_SANE_TIME:
        return Check("clock", "fail", f"system time {datetime.fromtimestamp(now, UTC):%Y-%m-%d} "
                     "is in the past: RTC battery or no time source")
    if clock.wall_clock_source() == clock.RTC:
        return Check("clock", "warn", "not synchronised (no NTP): timestamps rely on the RTC")
    return Check("clock", "ok", "synchronised")


def disk_check(config: AgentConfig) -> Check:
    directory = config.state.directory
    probe = directory if directory.exists() else directory.parent
    free = shutil.disk_usage(probe).free
    needed = max(MIN_FREE_BYTES, int(config.spool.max_mb * 2**20))
    if free < needed:
        return Check("disk", "warn", f"{free // 2**20} MiB free at {probe}; the spool may "
                     f"need {needed // 2**20} MiB")
    return Check("disk", "ok", f"{free // 2**20} MiB free at {probe}")


def broker_check(config: AgentConfig, timeout: float = 5.0) -> Check:
    """A real MQTT CONNECT with the vehicle's certificate (its own client id, so a running
    agent is not disconnected)."""
    # Imported here: `selftest --no-network` makes no connection and spares their import.
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    uplink = config.uplink
    where = f"{uplink.host}:{uplink.port}"
    answer: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"edge-agent-{config.vehicle.id}-selftest")
    client.on_connect = lambda c, u, f, reason, p: answer.put(
        "" if not reason.is_failure else str(reason))
    try:
        if uplink.tls:
            client.tls_set(ca_certs=str(uplink.ca_cert), certfile=str(uplink.cert),
                           keyfile=str(uplink.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.connect(uplink.host, uplink.port, keepalive=10)
        deadline = time.monotonic() + timeout
        verdict = None
        while verdict is None and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                verdict = "the broker closed the connection (it does not accept this "\
                          "vehicle's certificate?)"
            with contextlib.suppress(queue.Empty):
                verdict = answer.get_nowait()
        client.disconnect()
    except ssl.SSLError as exc:
        return Check("broker", "fail", f"{where}: TLS refused ({exc.reason or exc}): check the "
                     "broker's CA and that it trusts this vehicle's certificate")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        return Check("broker", "fail", f"{where} unreachable: {reason}")
    if verdict is None:
        return Check("broker", "fail", f"{where}: no MQTT answer within {timeout:.0f} s")
    if verdict:
        return Check("broker", "fail", f"{where}: {verdict}")
    return Check("broker", "ok", f"{where} accepted an MQTT connection"
                 f"{' over mutual TLS' if uplink.tls else ' (plaintext)'}")


def file_mode(path: Path) -> str:
    return f"{stat.S_IMODE(os.stat(path).st_mode):o}"
