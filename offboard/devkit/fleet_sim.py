"""`tools/fleet-sim --vehicles N --minutes M`: a simulated fleet publishing to a real broker.

Each simulated vehicle is what the agent is on the wire: its own throwaway Ed25519 key (the
public half in `--keys-dir` as `VEHICLE.pub`, which the backend reads with `--keys '*=DIR'`;
made on first use and kept, `--keys-only` makes them before the workers start), a new boot id
per run, and the agent's own Batcher (agent/output/batch.py)
sealing its windows, so every batch is byte for byte what a car with that sampling plan
sends. It publishes what a vehicle publishes, on a vehicle's topics, at QoS 1: its signed
signal dictionary retained on `{prefix}/{vehicle}/dictionary/{did}` once, then one batch per
window on `{prefix}/{vehicle}/telemetry` (with `--from-boot` the first carries its dictionary
in band, as a vehicle's first batch after it starts does).

The plan is the first `--signals` signals (default 800) of dbc/vehicle.dbc, sampled every
`--period` seconds (default 60: 800 samples per vehicle and minute, the sizing of the
backend's design figure, 10,000 cars = 133,000 samples/s); the values are the bench's
synthetic car (devkit/bench/synthetic.py), a different stretch of it per vehicle.

Fast: the M minutes of the fleet are simulated as fast as they seal (window by window, every
vehicle in turn), not in real time. What all vehicles share is computed once (the plan, the
values), and the vehicles share `--connections` MQTT connections (default 4): a broker whose
ACL lets a client publish only under its own name (`pattern write fleet/%u/#`) would need one
certificate and connection per vehicle, which this tool does not open.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import AgentError
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.output.uplink import topic
from agent.sampling.plan import SamplingPlan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from agent.wire.dictionary import dictionary_leaf
from devkit.bench import synthetic

log = logging.getLogger("devkit.fleet_sim")

WINDOW_MS = 60_000
MAX_INFLIGHT = 200  # per connection: QoS 1 messages awaiting their PUBACK


@dataclass
class SimVehicle:
    name: str
    boot: bytes
    ring: Ring
    batcher: Batcher


@dataclass(frozen=True)
class FleetPlan:
    """What every vehicle shares: the plan, and the sample values over a pool of minutes."""

    plan: SamplingPlan
    period_s: int
    values: list[list[list[int | float]]]  # [minute][tick][signal] raw values

    @property
    def samples_per_window(self) -> int:
        return len(self.plan.signals) * (60 // self.period_s)


def fleet_plan(signals: int, period_s: int, pool: int) -> FleetPlan:
    """`signals` of the synthetic car sampled every `period_s` s, `pool` minutes of values."""
    if not 1 <= signals <= synthetic.SIGNALS:
        raise AgentError(f"--signals {signals}: 1 to {synthetic.SIGNALS}")
    if period_s < 1 or 60 % period_s:
        raise AgentError(f"--period {period_s}: a whole divisor of 60 seconds")
    minutes = synthetic.minutes(pool)
    plan = minutes[0].plan
    plan = SamplingPlan(signals=plan.signals[:signals], stale_after_ms=plan.stale_after_ms)
    values = [[row[:signals] for row in minute.values[::period_s]] for minute in minutes]
    return FleetPlan(plan, period_s, values)


def vehicle_names(count: int, name_prefix: str) -> list[str]:
    return [f"{name_prefix}{number:05d}" for number in range(count)]


def vehicle_keys(names: list[str], keys_dir: Path) -> list[Ed25519PrivateKey]:
    """Each vehicle's key: the one in `keys_dir/private/VEHICLE.key` from an earlier run, or a
    new one written there (0600), its public half beside as `keys_dir/VEHICLE.pub`. Kept, so
    that workers started before a run (with `--keys '*=DIR'`) know the keys it signs with."""
    private = keys_dir / "private"
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    keys = []
    for name in names:
        path = private / f"{name}.key"
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError):
            key = None
        if not isinstance(key, Ed25519PrivateKey):
            key = Ed25519PrivateKey.generate()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                             NoEncryption()))
            (keys_dir / f"{name}.pub").write_bytes(key.public_key().public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        keys.append(key)
    return keys


def make_vehicles(count: int, shared: FleetPlan, keys_dir: Path, name_prefix: str, *,
                  from_boot: bool = False) -> list[SimVehicle]:
    """`count` vehicles, each with its own key (vehicle_keys) and a new boot id.

    A fleet is observed in its steady state: each vehicle's sequence starts somewhere in its
    boot (seq 1 to 59, spread over the fleet) and, as a running agent's, its batches carry no
    dictionary in band (it did with the first batch of its boot; workers read the retained
    copy, wire-format §4.9). `from_boot`: every vehicle starts at seq 0, as just booted, and
    its first batch carries the dictionary.
    """
    floats = frozenset(s.index for s in shared.plan.signals if s.is_float)
    vehicles = []
    names = vehicle_names(count, name_prefix)
    for name, key in zip(names, vehicle_keys(names, keys_dir), strict=True):
        boot = os.urandom(16)
        ring = Ring(shared.samples_per_window * 2, floats)
        identity = BatchIdentity(vehicle=name, boot=boot, config_version=1,
                                 dbc_digest=bytes(32), clock=lambda: "ntp")
        batcher = Batcher(shared.plan, ring, identity, Signer(key, CONTENT_TYPE),
                          lambda: {"can0.frames": 0})
        if not from_boot:
            batcher.resume(1 + len(vehicles) * 37 % 59)
        vehicles.append(SimVehicle(name, boot, ring, batcher))
    return vehicles


def seal_window(vehicle: SimVehicle, number: int, shared: FleetPlan, minute: int,
                t0_ms: int) -> tuple[bytes, int]:
    """Fill the vehicle's ring with its window `minute` and seal it: (envelope, samples)."""
    append = vehicle.ring.append
    rows = shared.values[(minute + number) % len(shared.values)]
    step = shared.period_s * 1000
    indexes = [s.index for s in shared.plan.signals]
    for tick, row in enumerate(rows):
        at = t0_ms + tick * step
        for index, value in zip(indexes, row, strict=True):
            append(at, index, Field.VALUE, value)
    sealed = vehicle.batcher.seal(t0_ms, t0_ms + WINDOW_MS)
    return sealed.envelope, sealed.samples


class Publisher:
    """A few MQTT v5 connections, QoS 1, counting PUBACKs."""

    def __init__(self, args: argparse.Namespace, connections: int) -> None:
        self.clients: list[mqtt.Client] = []
        self.published = 0
        self.bytes = 0
        self._acked = 0
        self._lock = threading.Lock()
        self._all_acked = threading.Condition(self._lock)
        ready: queue.Queue[str] = queue.Queue()
        for number in range(connections):
            client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                 client_id=f"fleet-sim-{os.getpid()}-{number}",
                                 protocol=mqtt.MQTTv5)
            if not args.plaintext:
                if not (args.ca_cert and args.cert and args.key):
                    raise AgentError("TLS needs --ca-cert, --cert and --key (or --plaintext)")
                client.tls_set(ca_certs=str(args.ca_cert), certfile=str(args.cert),
                               keyfile=str(args.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            client.max_inflight_messages_set(MAX_INFLIGHT)
            client.on_connect = lambda c, u, f, reason, p: ready.put(
                f"refused: {reason}" if reason.is_failure else "")
            client.on_publish = self._on_publish
            try:
                client.connect(args.host, args.port, keepalive=60)
            except OSError as exc:
                self.close()
                raise AgentError(f"cannot connect to {args.host}:{args.port}: {exc}") from exc
            client.loop_start()
            self.clients.append(client)
        for _ in range(connections):
            try:
                problem = ready.get(timeout=15)
            except queue.Empty:
                problem = "no answer from the broker"
            if problem:
                self.close()
                raise AgentError(f"cannot connect to {args.host}:{args.port}: {problem}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            self._acked += 1
            self._all_acked.notify_all()

    def publish(self, connection: int, where: str, payload: bytes, *,
                retain: bool = False) -> None:
        client = self.clients[connection % len(self.clients)]
        # Bounded: wait while the broker has not acknowledged many (paho would queue them all).
        with self._lock:
            self._all_acked.wait_for(
                lambda: self.published - self._acked < MAX_INFLIGHT * 4 * len(self.clients),
                timeout=60)
            self.published += 1
            self.bytes += len(payload)
        client.publish(where, payload, qos=1, retain=retain)

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def wait_acked(self, timeout: float) -> bool:
        with self._lock:
            return self._all_acked.wait_for(lambda: self._acked >= self.published, timeout)

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()


@dataclass(frozen=True)
class Message:
    """One publish of a simulated vehicle."""

    vehicle: int  # its number: which connection carries it
    topic: str
    payload: bytes
    retain: bool
    samples: int  # in a batch; 0 for a dictionary


def first_window(minutes: int) -> int:
    """The start of the first window: the fleet's M minutes end at the last full minute."""
    return (int(time.time() * 1000) // WINDOW_MS - minutes) * WINDOW_MS


def fleet_messages(vehicles: list[SimVehicle], shared: FleetPlan, prefix: str, minutes: int,
                   first_t0: int) -> Iterator[Message]:
    """What the fleet publishes, in order: each vehicle's dictionary (retained), then minute
    by minute a batch of every vehicle, sealed as it is asked for."""
    for number, vehicle in enumerate(vehicles):
        did = vehicle.batcher.dictionary_id
        yield Message(number, topic(prefix, vehicle.name, dictionary_leaf(did)),
                      vehicle.batcher.dictionary_envelope(), True, 0)
    for minute in range(minutes):
        t0_ms = first_t0 + minute * WINDOW_MS
        for number, vehicle in enumerate(vehicles):
            envelope, count = seal_window(vehicle, number, shared, minute, t0_ms)
            yield Message(number, topic(prefix, vehicle.name, "telemetry"), envelope, False,
                          count)


def simulate(args: argparse.Namespace, progress: Callable[[int], None]) -> dict[str, Any]:
    """Build the fleet, publish its dictionaries and M minutes of batches; the summary."""
    started = time.monotonic()
    shared = fleet_plan(args.signals, args.period, pool=min(args.minutes + 3, 10))
    vehicles = make_vehicles(args.vehicles, shared, args.keys_dir, args.name_prefix,
                             from_boot=args.from_boot)
    first_seqs = {v.name: v.batcher.next_seq for v in vehicles}
    prepared = time.monotonic()
    publisher = Publisher(args, min(args.connections, args.vehicles))
    first_t0 = first_window(args.minutes)
    samples = 0
    try:
        for message in fleet_messages(vehicles, shared, args.prefix, args.minutes, first_t0):
            publisher.publish(message.vehicle, message.topic, message.payload,
                              retain=message.retain)
            if not message.retain:
                samples += message.samples
                progress(1)
        acked = publisher.wait_acked(timeout=120)
    finally:
        publisher.close()
    seconds = time.monotonic() - prepared
    batches = args.vehicles * args.minutes
    return {
        "vehicles": args.vehicles, "minutes": args.minutes, "batches": batches,
        "samples": samples, "samples_per_batch": shared.samples_per_window,
        "dictionaries": args.vehicles, "published": publisher.published,
        "acked": publisher.acked, "all_acked": acked, "bytes": publisher.bytes,
        "prefix": args.prefix, "keys_dir": str(args.keys_dir),
        "first_t0_ms": first_t0, "setup_seconds": round(prepared - started, 2),
        "seconds": round(seconds, 2),
        "batches_per_s": round(batches / seconds, 1) if seconds else None,
        "samples_per_s": round(samples / seconds) if seconds else None,
        "boots": {v.name: v.boot.hex() for v in vehicles}, "first_seqs": first_seqs,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/fleet-sim",
        description="Simulate a fleet: N vehicles, each with its own key and the agent's own "
                    "batch code, publishing M minutes of batches (and their signed "
                    "dictionaries, retained) to an MQTT v5 broker as fast as they seal.")
    parser.add_argument("--vehicles", type=int, default=100, help="how many (default: 100)")
    parser.add_argument("--minutes", type=int, default=5,
                        help="minutes of data per vehicle, one batch each (default: 5)")
    parser.add_argument("--signals", type=int, default=synthetic.SIGNALS,
                        help=f"signals per vehicle (default: {synthetic.SIGNALS})")
    parser.add_argument("--period", type=int, default=60, metavar="SECONDS",
                        help="sampling period of every signal (default: 60, one sample per "
                             "signal and minute)")
    parser.add_argument("--keys-dir", type=Path, default=Path("fleet-sim-keys"), metavar="DIR",
                        help="each vehicle's public key is here as VEHICLE.pub, for the "
                             "backend's --keys '*=DIR', its private key in DIR/private/ "
                             "(made on first use, kept) (default: ./fleet-sim-keys)")
    parser.add_argument("--keys-only", action="store_true",
                        help="only make the vehicles' keys (kept in --keys-dir for later runs) "
                             "and exit: start the workers after this, then run the fleet")
    parser.add_argument("--from-boot", action="store_true",
                        help="every vehicle starts at seq 0, as just booted (its first batch "
                             "carries the dictionary in band); by default the fleet is in its "
                             "steady state, each vehicle somewhere in its boot")
    parser.add_argument("--name-prefix", default="sim-",
                        help="vehicle ids are PREFIX00000, PREFIX00001, ... (default: sim-)")
    parser.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument("--port", type=int, default=8883, help="broker port (default: 8883)")
    parser.add_argument("--ca-cert", type=Path, help="CA certificate of the broker")
    parser.add_argument("--cert", type=Path, help="client certificate")
    parser.add_argument("--key", type=Path, help="client private key")
    parser.add_argument("--plaintext", action="store_true",
                        help="connect without TLS (local tests only)")
    parser.add_argument("--prefix", default="fleet", help="topic prefix (default: fleet)")
    parser.add_argument("--connections", type=int, default=4,
                        help="MQTT connections the vehicles share (default: 4)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s fleet-sim: %(message)s")
    for name in ("vehicles", "minutes", "connections"):
        if getattr(args, name) < 1:
            print(f"fleet-sim: error: --{name} must be at least 1", file=sys.stderr)
            return 2
    if args.keys_only:
        vehicle_keys(vehicle_names(args.vehicles, args.name_prefix), args.keys_dir)
        print(f"{args.vehicles} vehicle keys in {args.keys_dir}", file=sys.stderr)
        return 0
    try:
        with _progress(args.vehicles * args.minutes) as progress:
            summary = simulate(args, progress)
    except AgentError as exc:
        print(f"fleet-sim: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['vehicles']} vehicles x {summary['minutes']} minutes: "
              f"{summary['batches']} batches, {summary['samples']} samples, "
              f"{summary['bytes']} bytes published in {summary['seconds']} s "
              f"({summary['batches_per_s']} batches/s, {summary['samples_per_s']} samples/s); "
              f"{summary['acked']} of {summary['published']} acknowledged")
    return 0 if summary["all_acked"] else 1


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar of batches on stderr when it is a terminal (rich), else nothing."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("fleet-sim"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("batches", total=total)
        yield lambda done: progress.update(task, advance=done)


if __name__ == "__main__":
    sys.exit(main())
