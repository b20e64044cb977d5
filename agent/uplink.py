"""MQTT v5 uplink: QoS 1 publishing over mutual TLS, a bounded in-flight window, birth/will.

One worker thread owns all uplink state; paho's callbacks only post events to its queue, so no
lock is ever held across a paho call. A batch counts as delivered only at its PUBACK; batches
in flight when the link drops are published again after reconnecting (the backend drops the
duplicates by boot and sequence number). What is not yet acknowledged is held in memory up to
`max_unacked` batches, the oldest dropped and counted beyond that (durable buffering is the
spool's job).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.batch import SealedBatch
from agent.config import UplinkConfig
from agent.errors import KeyFileError

log = logging.getLogger(__name__)


@dataclass
class UplinkHealth:
    published: int = 0
    acked: int = 0
    dropped: int = 0
    connects: int = 0
    connect_failures: int = 0
    connected: bool = False
    last_puback: float = 0.0

    def counters(self) -> dict[str, int]:
        return {"published": self.published, "acked": self.acked, "dropped": self.dropped,
                "connects": self.connects, "connect_failures": self.connect_failures}


def topic(prefix: str, vehicle: str, leaf: str) -> str:
    return f"{prefix}/{vehicle}/{leaf}"


class Uplink:
    def __init__(self, config: UplinkConfig, vehicle: str, boot: bytes) -> None:
        self._config = config
        self._telemetry = topic(config.prefix, vehicle, "telemetry")
        self._status = topic(config.prefix, vehicle, "status")
        self._boot = boot.hex()
        self.health = UplinkHealth()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending: deque[SealedBatch] = deque()
        self._inflight: dict[int, SealedBatch] = {}
        self._stopped = threading.Event()
        self._client = self._make_client(vehicle)
        self._worker = threading.Thread(target=self._work, name="uplink", daemon=True)

    @property
    def unacked(self) -> int:
        return len(self._pending) + len(self._inflight)

    def _make_client(self, vehicle: str) -> mqtt.Client:
        config = self._config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{vehicle}",
                             protocol=mqtt.MQTTv5)
        if config.tls:
            for name in ("ca_cert", "cert", "key"):
                path = getattr(config, name)
                if path is None or not path.is_file():
                    raise KeyFileError(f"[uplink] {name}: file {path} not found")
            try:
                client.tls_set(ca_certs=str(config.ca_cert), certfile=str(config.cert),
                               keyfile=str(config.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (ssl.SSLError, OSError) as exc:
                raise KeyFileError(f"[uplink] cannot use the TLS files (cert {config.cert}, "
                                   f"key {config.key}, CA {config.ca_cert}): {exc}") from exc
        else:
            log.warning("uplink: TLS is off (tls = false): batches are signed but not "
                        "encrypted in transit")
        client.will_set(self._status, self._status_payload("offline"), qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(config.reconnect_min)),
                                   max_delay=max(1, round(config.reconnect_max)))
        client.max_inflight_messages_set(config.max_inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        self._worker.start()
        self._client.connect_async(self._config.host, self._config.port,
                                   keepalive=self._config.keepalive)
        self._client.loop_start()

    def submit(self, batch: SealedBatch) -> None:
        self._events.put(("batch", batch))

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is unacknowledged for up to `timeout` s, say offline, disconnect."""
        self._events.put(("stop", time.monotonic() + timeout))
        self._worker.join(timeout + 5)
        self._client.loop_stop()

    def wait_until_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.unacked and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.unacked

    # paho callbacks: run on paho's thread, only post events.
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._events.put(("connected" if not reason.is_failure else "refused", reason))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._events.put(("connect_failed", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._events.put(("disconnected", reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._events.put(("acked", mid))

    # the worker: owns _pending, _inflight and health.
    def _work(self) -> None:
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = self._events.get(timeout=timeout)
            except queue.Empty:
                break
            if kind == "stop":
                deadline = value
            else:
                self._handle(kind, value)
            if deadline is not None and (not self.unacked or time.monotonic() >= deadline):
                break
        self._say_goodbye()

    def _handle(self, kind: str, value: Any) -> None:
        health = self.health
        if kind == "batch":
            self._pending.append(value)
            while self.unacked > self._config.max_unacked and self._pending:
                dropped = self._pending.popleft()
                health.dropped += 1
                log.warning("uplink: %d batches unacknowledged; dropped batch %d",
                            self.unacked, dropped.seq)
        elif kind == "acked":
            batch = self._inflight.pop(value, None)
            if batch is not None:
                health.acked += 1
                health.last_puback = time.time()
        elif kind == "connected":
            health.connected = True
            health.connects += 1
            log.info("uplink: connected to %s:%d", self._config.host, self._config.port)
            self._client.publish(self._status, self._status_payload("online"), qos=1,
                                 retain=True)
        elif kind in ("refused", "connect_failed"):
            health.connect_failures += 1
            log.error("uplink: cannot connect to %s:%d%s: %s", self._config.host,
                      self._config.port, " over TLS" if self._config.tls else "",
                      value if value is not None else "connection or TLS handshake failed "
                      "(check the broker address, that the broker trusts this vehicle's "
                      "certificate, and [uplink] ca_cert/cert/key)")
        elif kind == "disconnected":
            if health.connected:
                log.warning("uplink: disconnected (%s); will reconnect", value)
            health.connected = False
            # Unacknowledged batches go out again, in order, after reconnecting.
            self._pending.extendleft(sorted(self._inflight.values(), key=lambda b: b.seq,
                                            reverse=True))
            self._inflight.clear()
        self._pump()

    def _pump(self) -> None:
        while (self.health.connected and self._pending
               and len(self._inflight) < self._config.max_inflight):
            batch = self._pending.popleft()
            info = self._client.publish(self._telemetry, batch.envelope, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._pending.appendleft(batch)
                return
            self._inflight[info.mid] = batch
            self.health.published += 1

    def _say_goodbye(self) -> None:
        if self.unacked:
            log.warning("uplink: stopping with %d batches unacknowledged", self.unacked)
        if self.health.connected:
            info = self._client.publish(self._status, self._status_payload("offline"), qos=1,
                                        retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._stopped.set()

    def _status_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "boot": self._boot}).encode()
