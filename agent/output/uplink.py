"""MQTT v5 uplink: spooled batches out over mutual TLS at QoS 1, deleted at their PUBACK.

Two threads. The network thread runs paho's loop and (re)connects with capped exponential
back-off and jitter, so a fleet that lost its broker does not come back in one wave. The worker
thread owns all delivery state; paho's callbacks only post events to its queue. Order: batches
go out as the spool orders them, at most `max_inflight` awaiting PUBACK. After a reconnect the
backlog (batches spooled before it) drains in order at `drain_rate` batches/s while batches
sealed since keep flowing at once.
Batches in flight when the link drops stay in flight: paho keeps every publish until its PUBACK
and sends it again (DUP) after the reconnect, so the spool does not offer them a second time.
They are older than anything else, so they go first: paho queues its re-sends while it handles
the CONNACK, after on_connect has returned, so the worker learns of a connection only once the
loop() call that handled it has returned, and publishes only while that connection is up (the
`_link` lock: the network thread takes the link down under it before reconnecting, never
inside a paho call, so no publish can slip in between paho's reset and its re-sends).
The broker may have passed one on before the drop; the backend drops duplicates by
(boot, seq). A PUBACK with an error reason (MQTT v5: Mosquitto answers "Not authorized" when
its ACL denies the topic) is not a delivery: the batch stays spooled, is counted as refused,
and batches wait out a back-off before the next try, so a fleet-side ACL mistake costs nothing
once it is fixed.

Besides batches: with `on_config`, the retained `{prefix}/{vehicle}/config` topic is subscribed
on every connect and its documents handed over as they arrive (agent/ota/updater.py), so are
fetch requests on `{prefix}/{vehicle}/fetch` with `on_fetch` (agent/events/fetch.py), and
`publish` sends small messages such as the config acks, keeping a few while offline.
`retain` sends a retained message now and again on every connect (the signed signal
dictionary, docs/wire-format.md §4.9): whatever the broker lost, it has it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.schema import UplinkConfig
from agent.errors import KeyFileError
from agent.output.spool import Spool, SpooledBatch

log = logging.getLogger(__name__)

WORKER_TICK = 0.5
MAX_PENDING_MESSAGES = 100
# paho keeps every QoS 1 publish until its PUBACK (sending it again after a reconnect) except
# when it answers this: the message id is still taken.
PAHO_DID_NOT_KEEP = mqtt.MQTT_ERR_QUEUE_SIZE


@dataclass
class UplinkHealth:
    published: int = 0
    acked: int = 0
    dropped: int = 0
    connects: int = 0
    connect_failures: int = 0
    refused: int = 0
    connected: bool = False
    last_puback: float = 0.0


@dataclass(frozen=True)
class UplinkStats:
    """The uplink as diagnostics see it: its counters and whether it is connected now."""

    connected: bool
    published: int
    acked: int
    dropped: int
    connects: int
    connect_failures: int
    refused: int
    last_puback: float  # time.time() of the latest PUBACK, 0 before the first

    def counters(self) -> dict[str, int]:
        """The counters every batch carries (`uplink.<name>`)."""
        return {"published": self.published, "acked": self.acked, "dropped": self.dropped,
                "connects": self.connects, "connect_failures": self.connect_failures,
                "refused": self.refused}


def topic(prefix: str, vehicle: str, leaf: str) -> str:
    return f"{prefix}/{vehicle}/{leaf}"


def backoff_delays(minimum: float, maximum: float, rng: random.Random) -> Any:
    """Exponential delays capped at `maximum`, each scaled by a random factor in [0.5, 1.0]."""
    delay = minimum
    while True:
        yield delay * rng.uniform(0.5, 1.0)
        delay = min(delay * 2, maximum)


class Uplink:
    def __init__(self, config: UplinkConfig, vehicle: str, boot: bytes, spool: Spool,
                 beat: Callable[[], None] = lambda: None,
                 on_config: Callable[[bytes], None] | None = None,
                 on_fetch: Callable[[bytes], None] | None = None) -> None:
        self._config = config
        self._beat = beat
        self._on_config = on_config
        self._config_topic = topic(config.prefix, vehicle, "config")
        self._on_fetch = on_fetch  # fetch requests (agent/events/fetch.py), not retained
        self._fetch_topic = topic(config.prefix, vehicle, "fetch")
        self._messages: deque[tuple[str, bytes, bool]] = deque(maxlen=MAX_PENDING_MESSAGES)
        self._retained: dict[str, tuple[str, bytes]] = {}  # by kind: topic and payload
        self._vehicle = vehicle
        self._status = topic(config.prefix, vehicle, "status")
        self._boot = boot.hex()
        self._spool = spool
        self.health = UplinkHealth()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._memory: deque[SpooledBatch] = deque()
        self._inflight: dict[int, SpooledBatch] = {}
        self._backlog_mark = 0
        self._refusal_delays: Any = None  # back-off since the first refusal after a PUBACK
        self._hold_until = 0.0  # after a refused PUBACK: no batch goes out before this
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._closing = threading.Event()
        # Set by the network thread once paho has queued its re-sends on a new connection,
        # cleared (holding `_link`) before it reconnects; the worker publishes only holding
        # `_link` and with the link up.
        self._link_up = threading.Event()
        self._link = threading.Lock()
        # For the current connection, on the network thread: paho reported its end, the
        # broker accepted it or refused it in its CONNACK (paho then reports the end too: said
        # once).
        self._disconnect_seen = False
        self._connack_accepted = False
        self._connack_refused = False
        self._client = self._make_client()
        self._worker = threading.Thread(target=self._work, name="uplink", daemon=True)
        self._network = threading.Thread(target=self._run_network, name="mqtt", daemon=True)

    def _fresh_delays(self) -> Any:
        return backoff_delays(self._config.reconnect_min, self._config.reconnect_max,
                              random.Random())

    def topic_for(self, leaf: str) -> str:
        return topic(self._config.prefix, self._vehicle, leaf)

    @property
    def unacked(self) -> int:
        return self._spool.stats().depth + len(self._memory)

    def _make_client(self) -> mqtt.Client:
        config = self._config
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"edge-agent-{self._vehicle}", protocol=mqtt.MQTTv5)
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
        client.max_inflight_messages_set(config.max_inflight)
        # Only the network thread writes to the socket. Without this hook paho writes inline in
        # publish() on the calling thread, so two threads could write (and SSL_write) at once,
        # and a write failing there makes publish() report a message paho has kept anyway.
        client.on_socket_register_write = lambda client, userdata, sock: None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        self._worker.start()
        self._network.start()

    def submit(self, batch: SpooledBatch) -> None:
        """Offer a batch that the spool has committed (or could not keep: id None)."""
        self._events.put(("batch", batch))

    def publish(self, leaf: str, payload: bytes) -> None:
        """Send a small message at QoS 1 (not spooled: kept in memory while offline)."""
        self._events.put(("message", (self.topic_for(leaf), payload, False)))

    def retain(self, kind: str, leaf: str, payload: bytes) -> None:
        """Publish a retained message now and on every (re)connect; a later call of the same
        `kind` replaces it for the reconnects (the broker keeps both topics' messages)."""
        self._events.put(("retain", (kind, self.topic_for(leaf), payload)))

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is pending for up to `timeout` s, say offline, disconnect."""
        self._events.put(("stop", time.monotonic() + timeout))
        self._worker.join(timeout + 5)
        self._closing.set()
        self._network.join(5)

    def stats(self) -> UplinkStats:
        health = self.health
        return UplinkStats(connected=health.connected, published=health.published,
                           acked=health.acked, dropped=health.dropped, connects=health.connects,
                           connect_failures=health.connect_failures, refused=health.refused,
                           last_puback=health.last_puback)

    def reconnect(self) -> str:
        """Drop the connection; the network thread reconnects after its back-off."""
        if not self.health.connected:
            return "not connected; already trying to reconnect"
        self._client.disconnect()
        return "disconnected; reconnecting"

    # The network thread: connect, loop, reconnect with jittered back-off.
    def _run_network(self) -> None:
        client = self._client
        config = self._config
        delays = self._fresh_delays()
        connected_once = False
        while not self._closing.is_set():
            self._disconnect_seen = self._connack_accepted = self._connack_refused = False
            try:
                if connected_once:
                    client.reconnect()
                else:
                    client.connect(config.host, config.port, keepalive=config.keepalive)
                    connected_once = True
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._events.put(("connect_failed", exc))
                self._closing.wait(next(delays))
                continue
            while not self._closing.is_set():
                if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                    break
                if self._connack_accepted and not self._link_up.is_set():
                    # The loop() that handled the CONNACK has returned, so paho has queued
                    # its re-sends: whatever the worker publishes now goes after them.
                    self._link_up.set()
                    self._events.put(("connected", None))
                    delays = self._fresh_delays()
            with self._link:  # no publish under way, and none until the next connection
                self._link_up.clear()
            if self._closing.is_set():
                break
            if not self._disconnect_seen:
                self._ended("connection lost")
            self._closing.wait(next(delays))
        with contextlib.suppress(OSError):
            client.loop(timeout=0.1)

    # paho callbacks: run on the network thread, only post events.
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Properties | None) -> None:
        # Accepted: announced by _run_network once this loop() call returns (paho re-sends
        # what awaits a PUBACK only after this callback).
        self._connack_accepted = not reason.is_failure
        self._connack_refused = reason.is_failure
        if reason.is_failure:
            self._events.put(("refused", reason))
        if not reason.is_failure and self._on_config is not None:
            client.subscribe(self._config_topic, qos=1)
        if not reason.is_failure and self._on_fetch is not None:
            client.subscribe(self._fetch_topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        if self._on_config is not None and message.topic == self._config_topic:
            self._on_config(bytes(message.payload))
        elif self._on_fetch is not None and message.topic == self._fetch_topic:
            self._on_fetch(bytes(message.payload))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._ended(reason)

    def _ended(self, reason: Any) -> None:
        """The current connection is over (network thread, once per connection)."""
        if self._connack_accepted and not self._link_up.is_set():
            # Lost in the very loop() call that handled the CONNACK: it was accepted all the
            # same (counted as a connection, not a failure); the link never came up.
            self._events.put(("connected", None))
        self._connack_accepted = False
        self._disconnect_seen = True
        if not self._connack_refused:
            self._events.put(("disconnected", reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._events.put(("refused_puback", (mid, reason)) if reason.is_failure
                         else ("acked", mid))

    # The worker: owns _memory, _inflight, the drain budget and health.
    def _work(self) -> None:
        deadline: float | None = None
        while True:
            self._beat()
            try:
                kind, value = self._events.get(timeout=WORKER_TICK)
            except queue.Empty:
                kind, value = "tick", None
            if kind == "stop":
                deadline = value
            else:
                self._handle(kind, value)
            self._pump()
            if deadline is not None and (not self._pending_anything()
                                         or time.monotonic() >= deadline):
                break
        self._say_goodbye()

    def _pending_anything(self) -> bool:
        return bool(self._inflight or self._memory or self._spool.next_batches(1))

    def _handle(self, kind: str, value: Any) -> None:
        health = self.health
        if kind == "batch":
            if value.id is None:
                self._memory.append(value)
                while len(self._memory) > self._config.max_unacked:
                    dropped = self._memory.popleft()
                    health.dropped += 1
                    log.warning("uplink: %d unspooled batches waiting; dropped batch %d",
                                len(self._memory), dropped.seq)
        elif kind == "message":
            self._messages.append(value)
        elif kind == "retain":
            retained_kind, retained_topic, payload = value
            self._retained[retained_kind] = (retained_topic, payload)
            self._messages.append((retained_topic, payload, True))
        elif kind == "acked":
            batch = self._inflight.pop(value, None)
            if batch is not None:
                if batch.id is not None:
                    self._spool.delete(batch.id)
                health.acked += 1
                health.last_puback = time.time()
                self._refusal_delays = None
        elif kind == "refused_puback":
            self._refused(*value)
        elif kind == "connected":
            health.connected = True
            health.connects += 1
            newest = self._spool.next_batches(1, newest=True)
            self._backlog_mark = newest[0].id if newest and newest[0].id else 0
            self._tokens, self._tokens_at = 1.0, time.monotonic()
            log.info("uplink: connected to %s:%d", self._config.host, self._config.port)
            self._publish(self._status, self._status_payload("online"), retain=True)
            self._messages.extend((retained_topic, payload, True)
                                  for retained_topic, payload in self._retained.values())
        elif kind in ("refused", "connect_failed"):
            health.connect_failures += 1
            log.error("uplink: cannot connect to %s:%d%s: %s", self._config.host,
                      self._config.port, " over TLS" if self._config.tls else "",
                      _explain(value))
        elif kind == "disconnected":
            if health.connected:
                log.warning("uplink: disconnected (%s); reconnecting with back-off", value)
            else:
                health.connect_failures += 1
                log.error("uplink: %s:%d closed the connection before accepting it (%s): "
                          "check that the broker trusts this vehicle's certificate",
                          self._config.host, self._config.port, value)
            health.connected = False

    def _publish(self, message_topic: str, payload: bytes,
                 retain: bool = False) -> mqtt.MQTTMessageInfo | None:
        """Hand a QoS 1 message to paho if the link is up (None if not): never between paho's
        reset of what it keeps and its re-sends of it, which would put this message first."""
        with self._link:
            if not self._link_up.is_set():
                return None
            return self._client.publish(message_topic, payload, qos=1, retain=retain)

    def _pump(self) -> None:
        while self.health.connected and self._messages:
            leaf_topic, payload, retain = self._messages[0]
            info = self._publish(leaf_topic, payload, retain)
            if info is None or info.rc == PAHO_DID_NOT_KEEP:
                break
            self._messages.popleft()
        if time.monotonic() < self._hold_until:
            return
        while self.health.connected and len(self._inflight) < self._config.max_inflight:
            batch = self._memory.popleft() if self._memory else self._next_from_spool()
            if batch is None:
                return
            info = self._publish(self.topic_for(batch.topic), batch.envelope)
            if info is None or info.rc == PAHO_DID_NOT_KEEP:
                self._put_back(batch)
                return
            self._inflight[info.mid] = batch
            self.health.published += 1

    def _put_back(self, batch: SpooledBatch) -> None:
        """Not on its way after all: first in line again, in memory or in the spool."""
        if batch.id is None:
            self._memory.appendleft(batch)
        else:
            self._spool.not_sending((batch.id,))

    def _refused(self, mid: int, reason: ReasonCode) -> None:
        batch = self._inflight.pop(mid, None)
        if batch is None:  # a small message (status, config ack): not kept
            log.warning("uplink: the broker refused a message (%s)", reason)
            return
        self.health.refused += 1
        self._put_back(batch)
        if time.monotonic() >= self._hold_until:
            if self._refusal_delays is None:
                self._refusal_delays = self._fresh_delays()
            delay = next(self._refusal_delays)
            self._hold_until = time.monotonic() + delay
            log.error("uplink: the broker refused batch %d on %s (%s): it stays %s and is "
                      "tried again in %.1f s; check the broker's ACL for this vehicle's "
                      "certificate and [vehicle] id", batch.seq, self.topic_for(batch.topic),
                      reason, "spooled" if batch.id is not None else "in memory", delay)

    def _next_from_spool(self) -> SpooledBatch | None:
        while True:
            batch = self._pick_from_spool()
            # A batch evicted between reading and claiming it is lost and counted: skip it.
            if batch is None or batch.id is None or self._spool.sending(batch.id):
                return batch

    def _pick_from_spool(self) -> SpooledBatch | None:
        skip = [b.id for b in self._inflight.values() if b.id is not None]
        backlog = self._spool.next_batches(1, skip, up_to=self._backlog_mark)
        if backlog and self._take_token():
            return backlog[0]
        fresh = self._spool.next_batches(1, skip, after=self._backlog_mark)
        return fresh[0] if fresh else None

    def _take_token(self) -> bool:
        rate = self._config.drain_rate
        if rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _say_goodbye(self) -> None:
        info = self._publish(self._status, self._status_payload("offline"), retain=True)
        if info is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        while True:  # PUBACKs that came in meanwhile still count
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                break
            if kind in ("acked", "refused_puback"):
                self._handle(kind, value)
        unsent = [b for b in (*self._inflight.values(), *self._memory) if b.id is None]
        if unsent:
            self.health.dropped += len(unsent)
            log.warning("uplink: stopping: %d batches the disk could not keep are lost",
                        len(unsent))
        if self._spool.next_batches(1):
            log.warning("uplink: stopping with batches unacknowledged; they stay spooled")
        # Those the spool evicted while they were in flight are lost now: counted.
        self._spool.not_sending([b.id for b in self._inflight.values() if b.id is not None])

    def _status_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "boot": self._boot}).encode()


def _explain(problem: Any) -> str:
    text = str(problem) if problem is not None else "connection failed"
    if isinstance(problem, ssl.SSLError):
        return (f"TLS handshake failed ({text}): check that the broker trusts this vehicle's "
                "certificate and that [uplink] ca_cert matches the broker's CA")
    if isinstance(problem, ConnectionRefusedError):
        return f"{text}: is the broker running and listening on this port?"
    return text
