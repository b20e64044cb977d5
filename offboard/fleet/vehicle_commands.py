"""Publishing a signed command to vehicles and collecting their acks: what `tools/config-publish`
(a config update on `{prefix}/{vehicle}/config`, retained) and `tools/fetch-request` (a fetch
on `{prefix}/{vehicle}/fetch`, not retained) share. Each vehicle answers on `<leaf>/ack`."""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import AgentError
from agent.output.uplink import topic

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """The acks received (each with its `vehicle`) and the vehicles that sent none in time."""

    acks: list[dict[str, Any]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


def publish_and_wait(args: argparse.Namespace, client_name: str, leaf: str,
                     payloads: Mapping[str, bytes], *, retain: bool,
                     on_ack: Callable[[dict[str, Any]], None] | None = None) -> Delivery:
    """Publish each vehicle's payload on `{prefix}/{vehicle}/{leaf}` at QoS 1 and, with
    `args.wait_ack` seconds, wait for every vehicle's ack (subscribed before publishing, so
    none is missed). `args` carries the broker options: host, port, plaintext, ca_cert, cert,
    key, prefix. A broker that does not acknowledge is an AgentError."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"{client_name}-{time.monotonic_ns()}")
    if not args.plaintext:
        client.tls_set(ca_certs=str(args.ca_cert), certfile=str(args.cert),
                       keyfile=str(args.key), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    delivery = Delivery(missing=set(payloads))
    subscribed = threading.Event()
    all_acked = threading.Event()
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        vehicle = message.topic.split("/")[-3]  # {prefix}/{vehicle}/{leaf}/ack
        try:
            ack = {"vehicle": vehicle, **json.loads(message.payload)}
        except (ValueError, TypeError):
            return  # not an ack document: not counted as one
        with lock:
            delivery.acks.append(ack)
            delivery.missing.discard(vehicle)
            done = not delivery.missing
        if on_ack is not None:
            on_ack(ack)
        if done:
            all_acked.set()

    client.on_message = on_message
    client.on_subscribe = lambda *unused: subscribed.set()
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        if args.wait_ack:
            client.subscribe([(topic(args.prefix, vehicle, f"{leaf}/ack"), 1)
                              for vehicle in payloads])
            if not subscribed.wait(10):
                raise AgentError("the broker did not confirm the ack subscription")
        for vehicle, payload in payloads.items():
            info = client.publish(topic(args.prefix, vehicle, leaf), payload, qos=1,
                                  retain=retain)
            info.wait_for_publish(timeout=10)
            if not info.is_published():
                raise AgentError(f"the broker did not acknowledge the {leaf} message for "
                                 f"{vehicle}")
            log.info("published %d bytes%s to %s", len(payload), " retained" if retain else "",
                     topic(args.prefix, vehicle, leaf))
        if args.wait_ack:
            all_acked.wait(args.wait_ack)
    finally:
        client.loop_stop()
        client.disconnect()
    with lock:
        return Delivery(list(delivery.acks), set(delivery.missing) if args.wait_ack else set())
