"""Signed config updates against the real agent and a real Mosquitto with mutual TLS."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from devkit.pki import TlsFiles
from fleet.backend import load_keyring

from agent.ota.update import CONTENT_TYPE, DbcEntry, sign_update
from agent.output.batch import open_batch
from agent.runtime.control import ControlUnavailable, request
from agent.wire.body import BatchBody
from agent.wire.cose import Signer
from agent.wire.keys import generate_key_pair, load_private_key
from tests.helpers.agent_setup import BUNDLED_DBC, REPO, write_agent_config
from tests.helpers.capture import Capture
from tests.helpers.support import wait_until

VEHICLE = "demo-0001"
RUNNING = re.compile(r"agent running: .* config version (\d+),")
NARROW = '[[sampling.signals]]\nmatch = "can0.VCU_Status.*"\n'


TELEMETRY = f"fleet/{VEHICLE}/telemetry"
UPDATES = f"fleet/{VEHICLE}/config"
UPDATE_ACKS = f"fleet/{VEHICLE}/config/ack"


class Backend:
    """Publishes updates retained to the vehicle's config topic; collects batches and acks."""

    def __init__(self, port: int, tls: TlsFiles) -> None:
        self.capture = Capture(port, tls, [TELEMETRY, UPDATE_ACKS])

    @property
    def batches(self) -> list[bytes]:
        return self.capture.payloads(TELEMETRY)

    @property
    def acks(self) -> list[dict]:
        return [json.loads(ack) for ack in self.capture.payloads(UPDATE_ACKS)]

    def publish(self, envelope: bytes) -> None:
        self.capture.publish(UPDATES, envelope, retain=True)

    def next_ack(self, seen: int, timeout: float = 40) -> dict:
        return json.loads(self.capture.wait_for(UPDATE_ACKS, seen, timeout))

    def bodies(self, vehicle_pub: Path) -> list[BatchBody]:
        keyring = load_keyring([vehicle_pub])[0]
        return [open_batch(envelope, keyring) for envelope in self.batches]

    def close(self) -> None:
        self.capture.close()


def agent_config(directory: Path, mosquitto, dev_pki, grace: float = 2.0,
                 extra_ota: str = "") -> Path:
    key = directory / "backend.key"
    if not key.exists():
        generate_key_pair(key)
    config = write_agent_config(
        directory, port=mosquitto.port, tls=dev_pki.client(VEHICLE), window=1.0, speed=1.0,
        extra=f"drain_rate = 0\n\n[ota]\ntrusted_keys = [\"{directory / 'backend.pub'}\"]\n"
              f"grace_period = {grace}\n{extra_ota}\n[state]\ndirectory = \"state\"\n")
    config.write_text(config.read_text().replace("rebase = false", "rebase = true\nloop = true"))
    return config


def spawn(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log.open("a"),
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def stop(agent: subprocess.Popen) -> None:
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0


def update(directory: Path, version: int, config: str = NARROW, *,
           key: Ed25519PrivateKey | None = None, vehicle: str = VEHICLE,
           expires_in: int = 3600, dbc: dict[str, DbcEntry] | None = None) -> bytes:
    key = key or load_private_key(directory / "backend.key")
    return sign_update(Signer(key, CONTENT_TYPE), version=version, config_text=config,
                       expires_at=int(time.time()) + expires_in, vehicle=vehicle, dbc=dbc)


def running_version(socket: Path) -> int | None:
    try:
        return request(socket, "status")["config"]["version"]
    except ControlUnavailable:
        return None


def versions_after(backend: Backend, directory: Path, count: int) -> list[int]:
    return [b.config_version for b in backend.bodies(directory / "vehicle.pub")[count:]]


def test_an_applied_update_changes_the_next_batches_and_is_acked(tmp_path, mosquitto,
                                                                 dev_pki):
    config = agent_config(tmp_path, mosquitto, dev_pki)
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    try:
        assert wait_until(lambda: len(backend.batches) >= 3, 40), log.read_text()[-2000:]
        backend.publish(update(tmp_path, 2))
        ack = backend.next_ack(0)
        assert ack["outcome"] == "applied" and ack["version"] == 2, ack
        assert ack["running_version"] == 2
        seen = len(backend.batches)
        assert wait_until(lambda: len(backend.batches) >= seen + 3, 30)
        status = request(tmp_path / "state" / "control.sock", "status")
        assert status["config"]["version"] == 2
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
        backend.close()
    bodies = backend.bodies(tmp_path / "vehicle.pub")
    versions = [body.config_version for body in bodies]
    first_new = versions.index(2)
    assert set(versions[:first_new]) == {1} and set(versions[first_new:]) == {2}
    assert [body.seq for body in bodies] == list(range(len(bodies)))  # no gap, no restart
    old_keys = {d.key for d in bodies[0].dictionary}
    new_keys = {d.key for d in bodies[first_new].dictionary}
    assert new_keys and all(".VCU_Status." in key for key in new_keys)
    assert len(old_keys) > len(new_keys) * 10
    assert bodies[-1].series and all(bodies[-1].dictionary_id == b.dictionary_id
                                     for b in bodies[first_new:])
    assert bodies[first_new].t0_ms >= bodies[first_new - 1].t1_ms
    restarted = spawn(config, tmp_path / "restart.log")
    try:
        assert wait_until(lambda: RUNNING.search((tmp_path / "restart.log").read_text()), 40)
        assert RUNNING.search((tmp_path / "restart.log").read_text()).group(1) == "2"
        stop(restarted)
    finally:
        if restarted.poll() is None:
            restarted.kill()


def test_hostile_updates_are_rejected_and_the_running_config_stays(tmp_path, mosquitto,
                                                                   dev_pki):
    config = agent_config(tmp_path, mosquitto, dev_pki, extra_ota="max_bytes = 20000\n")
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    rng = random.Random(5)
    good = update(tmp_path, 6)
    digest = hashlib.sha256(BUNDLED_DBC.read_bytes()).digest()
    sources = (f'[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "x"\n'
               f'dbc = ["{BUNDLED_DBC}"]\n')
    hostile = [
        ("bad signature", good[:-10] + bytes(10), "bad-signature"),
        ("unknown key", update(tmp_path, 6, key=Ed25519PrivateKey.generate()), "unknown-key"),
        ("tampered payload", good.replace(b"VCU_Status", b"VCU_Statuz"),
         "bad-signature"),
        ("older version", update(tmp_path, 4), "not-newer"),
        ("same version", update(tmp_path, 5, "[batch]\nwindow = 2.0\n"), "not-newer"),
        ("expired", update(tmp_path, 6, expires_in=-5), "expired"),
        ("other vehicle", update(tmp_path, 6, vehicle="demo-0002"), "wrong-target"),
        ("oversize", update(tmp_path, 6, NARROW + "#" * 30000), "too-large"),
        ("invalid schema", update(tmp_path, 6, "[batch]\nwindow = -1\n"), "invalid-config"),
        ("missing DBC digest", update(tmp_path, 6, sources), "dbc-digest-missing"),
        ("mismatched DBC digest", update(tmp_path, 6, sources,
                                         dbc={str(BUNDLED_DBC): DbcEntry(bytes(32))}),
         "dbc-mismatch"),
        ("delivered DBC not matching", update(tmp_path, 6, sources, dbc={
            str(BUNDLED_DBC): DbcEntry(digest, b"BO_ 1 X: 8 ECU\n")}), "dbc-mismatch"),
        *[(f"garbage {n}", rng.randbytes(rng.randrange(1, 3000)), "malformed")
          for n in range(5)],
    ]
    try:
        assert wait_until(lambda: len(backend.batches) >= 2, 40), log.read_text()[-2000:]
        backend.publish(update(tmp_path, 5))
        assert backend.next_ack(0)["outcome"] == "applied"
        for number, (case, envelope, reason) in enumerate(hostile, start=1):
            backend.publish(envelope)
            ack = backend.next_ack(number)
            assert (ack["outcome"], ack["reason"]) == ("rejected", reason), (case, ack)
            assert ack["running_version"] == 5, (case, ack)
        seen = len(backend.batches)
        assert wait_until(lambda: len(backend.batches) >= seen + 3, 30)
        assert set(versions_after(backend, tmp_path, seen)) == {5}
        assert agent.poll() is None
        backend.publish(b"")  # clear the retained update
        stop(agent)
        agent = spawn(config, log)
        assert wait_until(lambda: len(RUNNING.findall(log.read_text())) == 2, 40)
        assert RUNNING.findall(log.read_text())[-1] == "5"
        acks = len(backend.acks)
        backend.publish(update(tmp_path, 3))  # a replay of an older version after restart
        ack = backend.next_ack(acks)
        assert (ack["outcome"], ack["reason"], ack["version"]) == ("rejected", "not-newer", 3)
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
        backend.close()
    assert "Traceback" not in log.read_text()


def test_an_update_that_fails_at_run_time_is_rolled_back(tmp_path, mosquitto, dev_pki):
    config = agent_config(tmp_path, mosquitto, dev_pki, grace=4.0)
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    replay = re.search(r'path = "(.*)"', config.read_text()).group(1)
    broken = (f'[[sources]]\nname = "can0"\ntype = "replay"\npath = "{replay}"\n'
              f'dbc = ["{BUNDLED_DBC}"]\nspeed = 1.0\nrebase = true\nloop = true\n\n'
              f'[[sources]]\nname = "can1"\ntype = "socketcan"\nchannel = "vcan-missing"\n'
              f'dbc = ["{BUNDLED_DBC}"]\n')
    digest = hashlib.sha256(BUNDLED_DBC.read_bytes()).digest()
    try:
        assert wait_until(lambda: len(backend.batches) >= 2, 40), log.read_text()[-2000:]
        backend.publish(update(tmp_path, 2, broken, dbc={str(BUNDLED_DBC): DbcEntry(digest)}))
        ack = backend.next_ack(0)
        assert (ack["outcome"], ack["reason"], ack["version"]) == (
            "rolled-back", "runtime-failure", 2), ack
        assert "can1" in ack["message"] and ack["running_version"] == 1
        seen = len(backend.batches)
        assert wait_until(lambda: len(backend.batches) >= seen + 3, 30)
        assert set(versions_after(backend, tmp_path, seen + 1)) == {1}
        assert request(tmp_path / "state" / "control.sock", "status")["config"]["version"] == 1
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
        backend.close()
    versions = [b.config_version for b in backend.bodies(tmp_path / "vehicle.pub")]
    assert 2 in versions and versions[-1] == 1  # it ran, then the last-known-good came back
    assert not (tmp_path / "state" / "ota" / "current.cose").exists()
    assert (tmp_path / "state" / "ota" / "highest").read_text() == "2"


def test_sigkill_during_apply_leaves_the_old_or_the_new_config(tmp_path, mosquitto, dev_pki):
    """Every SIGKILL lands just after the agent starts applying (tests/unit/ota/test_store.py
    kills at each file-system step); the restart runs the old or the new version."""
    config = agent_config(tmp_path, mosquitto, dev_pki, grace=1.0)
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    rng = random.Random(int(os.environ.get("AGENT_KILL_SEED", "7")))
    running = 1
    outcomes: list[bool] = []
    try:
        for version in range(2, 10):
            log = tmp_path / f"run-{version}.log"
            agent = spawn(config, log)
            assert wait_until(lambda log=log: RUNNING.search(log.read_text()), 40)
            window = 1.0 + version / 10
            backend.publish(update(tmp_path, version, f"[batch]\nwindow = {window}\n"))
            applying = f"applying version {version}"
            assert wait_until(lambda log=log, a=applying: a in log.read_text(), 30, 0.002)
            time.sleep(rng.uniform(0.0, 0.01))  # inside the write, the swap or the watch
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            check = tmp_path / f"check-{version}.log"
            restarted = spawn(config, check)
            assert wait_until(lambda check=check: RUNNING.search(check.read_text()), 40), \
                check.read_text()[-2000:]
            started_with = int(RUNNING.search(check.read_text()).group(1))
            assert started_with in (running, version), (running, version, started_with)
            outcomes.append(started_with == version)
            assert wait_until(lambda v=version: running_version(
                tmp_path / "state" / "control.sock") == v, 30)
            stop(restarted)
            running = version
    finally:
        backend.close()
    print(f"restarted with the new version after {sum(outcomes)} of {len(outcomes)} kills")


def test_sighup_and_the_control_socket_reload_the_local_file(tmp_path, mosquitto, dev_pki):
    config = agent_config(tmp_path, mosquitto, dev_pki, grace=1.0)
    backend = Backend(mosquitto.port, dev_pki.client("backend"))
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    socket = tmp_path / "state" / "control.sock"
    original = config.read_text()
    try:
        assert wait_until(lambda: len(backend.batches) >= 2, 40), log.read_text()[-2000:]
        config.write_text("version = 2\n" + original.replace(
            'match = "can0.*"', 'match = "can0.VCU_Status.*"'))
        agent.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "running version 2" in log.read_text(), 30)
        # A window sealed under version 1 may still be on its way to the broker: version 2
        # must come, and once it has, nothing sealed under version 1 may follow it.
        seen = len(backend.batches)
        assert wait_until(lambda: 2 in versions_after(backend, tmp_path, seen), 30)
        assert wait_until(lambda: len(backend.batches) >= seen + 2, 30)
        after = backend.bodies(tmp_path / "vehicle.pub")[seen:]
        first = [body.config_version for body in after].index(2)
        assert {body.config_version for body in after[:first]} <= {1}
        assert {body.config_version for body in after[first:]} == {2}
        new = after[first]
        keys = {d.key for d in new.dictionary} - {"can0.ESP_VehicleSpeed.VehicleSpeed"}
        assert keys and all(".VCU_Status." in key for key in keys)  # the stats rule stays

        config.write_text("version = 3\n" + original.replace("window = 1.0", "window = -1"))
        try:
            request(socket, "reload", timeout=10)
            raise AssertionError("an invalid config was accepted")
        except ControlUnavailable as exc:
            assert "still running version 2" in str(exc) and "[batch] window" in str(exc)
        agent.send_signal(signal.SIGHUP)
        assert wait_until(lambda: log.read_text().count("reload rejected") >= 2, 30)
        config.write_text("version = 4\n" + original)
        assert "running version 4" in request(socket, "reload", timeout=10)
        seen = len(backend.batches)
        assert wait_until(lambda: len(backend.batches) >= seen + 2, 30)
        assert set(versions_after(backend, tmp_path, seen + 1)) == {4}
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
        backend.close()


def test_the_backend_tools_deliver_a_dbc_and_report_the_ack(tmp_path, mosquitto, dev_pki):
    config = agent_config(tmp_path, mosquitto, dev_pki, grace=1.0)
    replay = re.search(r'path = "(.*)"', config.read_text()).group(1)
    office = tmp_path / "backend"
    office.mkdir()
    (office / "ev-2027.dbc").write_bytes(BUNDLED_DBC.read_bytes())
    (office / "update.toml").write_text(
        f'[[sources]]\nname = "can0"\ntype = "replay"\npath = "{replay}"\n'
        f'dbc = ["ev-2027.dbc"]\nloop = true\n\n{NARROW}')
    tls = dev_pki.client("backend")
    tool = [sys.executable, "-m", "fleet.config_signing"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    signed = subprocess.run([*tool, "sign", str(office / "update.toml"), "--key",
                             str(tmp_path / "backend.key"), "--version", "2", "--vehicle",
                             VEHICLE, "--embed-dbc"], capture_output=True, text=True, env=env)
    assert signed.returncode == 0, signed.stderr
    log = tmp_path / "agent.log"
    agent = spawn(config, log)
    try:
        assert wait_until(lambda: RUNNING.search(log.read_text()), 40)
        published = subprocess.run(
            [*tool, "publish", str(office / "update.cose"), "--vehicle", VEHICLE, "--host",
             "127.0.0.1", "--port", str(mosquitto.port), "--ca-cert", str(tls.ca_cert),
             "--cert", str(tls.cert), "--key", str(tls.key), "--wait-ack", "60"],
            capture_output=True, text=True, env=env, timeout=90)
        assert published.returncode == 0, published.stderr + log.read_text()[-2000:]
        ack = json.loads(published.stdout.splitlines()[-1])
        assert (ack["vehicle"], ack["version"], ack["outcome"]) == (VEHICLE, 2, "applied")
        digest = hashlib.sha256(BUNDLED_DBC.read_bytes()).hexdigest()
        assert (tmp_path / "state" / "ota" / "dbc" / f"{digest}.dbc").read_bytes() == \
            BUNDLED_DBC.read_bytes()
        stop(agent)
    finally:
        if agent.poll() is None:
            agent.kill()
