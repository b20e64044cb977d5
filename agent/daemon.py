"""The agent's wiring: source → decode → sample → ring → batch → spool → uplink, top to bottom.

Each source runs in its own thread and hands every frame to its decoder's store; one lock
serialises the stores and the sampler so that event time moves forward in one place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import can

from agent import clock, status
from agent.batch import CONTENT_TYPE, Batcher, BatchIdentity, SealedBatch
from agent.config import AgentConfig, control_socket_path
from agent.control import Command, ControlServer
from agent.cose import Signer
from agent.dbc import combined_digest, load_dbc
from agent.decode import FrameStore
from agent.health import SourceHealth
from agent.keys import load_private_key
from agent.plan import build_plan
from agent.ring import Ring
from agent.sampler import Sampler
from agent.sources import Source, open_source
from agent.spool import Spool
from agent.status import FrameRates
from agent.uplink import Uplink
from agent.watchdog import Liveness

log = logging.getLogger(__name__)

SHUTDOWN_DELIVERY_TIMEOUT = 5.0


@dataclass
class Agent:
    """A wired agent, ready to `start`. Built by `build_agent`; parts exposed for diagnostics."""

    config: AgentConfig
    sources: list[Source]
    stores: dict[str, FrameStore]
    sampler: Sampler
    batcher: Batcher
    spool: Spool
    uplink: Uplink
    ring: Ring
    boot: bytes
    lock: threading.Lock
    threads: list[threading.Thread]
    stop_event: threading.Event
    liveness: Liveness
    rates: FrameRates = field(default_factory=FrameRates)
    started: float = field(default_factory=time.monotonic)
    control: ControlServer | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.uplink.start()
        self.control = ControlServer(control_socket_path(self.config), self._commands(),
                                     group=self.config.control.group)
        self.control.start()
        for source in self.sources:
            thread = threading.Thread(target=self._run_source, args=(source,),
                                      name=f"source-{source.name}", daemon=True)
            self.threads.append(thread)
            thread.start()
        log.info("agent running: vehicle %s, boot %s, %d sources, %d signals",
                 self.config.vehicle.id, self.boot.hex(), len(self.sources),
                 len(self.batcher.dictionary))

    def _run_source(self, source: Source) -> None:
        name = f"source {source.name}"
        self.liveness.beat(name)
        try:
            source.run(self._frame_handler(source, name), self._idle_handler(name),
                       self.stop_event)
        except Exception:
            log.exception("source %s stopped unexpectedly", source.name)
            return
        if source.finished.is_set():
            self.liveness.retire(name)

    def _frame_handler(self, source: Source, name: str) -> Callable[[can.Message], None]:
        accept = self.stores[source.name].accept
        advance = self.sampler.advance
        beat = self.liveness.beat
        lock = self.lock

        def on_frame(frame: can.Message) -> None:
            with lock:
                advance(frame.timestamp)
                accept(frame)
            beat(name)

        return on_frame

    def _idle_handler(self, name: str) -> Callable[[float], None]:
        def on_idle(now: float) -> None:
            with self.lock:
                self.sampler.advance(now)
            self.liveness.beat(name)

        return on_idle

    def _commands(self) -> dict[str, Command]:
        return {
            "status": Command(lambda args: status.status(self)),
            "buses": Command(lambda args: status.buses(self, int(args.get("top", 10)))),
            "signals": Command(lambda args: status.signal_values(self, args.get("glob", "*"))),
            "queue": Command(lambda args: self._queue(int(args.get("limit", 20)))),
            "flush": Command(lambda args: self.flush(), changes_state=True),
            "reconnect": Command(lambda args: self.uplink.reconnect(), changes_state=True),
        }

    def _queue(self, limit: int) -> dict[str, object]:
        stats = self.spool.stats()
        return {"depth": stats.depth, "bytes": stats.bytes, "max_bytes": self.spool.max_bytes,
                "evicted": stats.evicted, "not_kept": stats.not_kept,
                "next": [{"seq": b.seq, "topic": b.topic, "bytes": len(b.envelope),
                          "priority": b.priority} for b in self.spool.next_batches(limit)]}

    def flush(self) -> str:
        """Seal the open window now (a tech wants to see data arrive, or before a power-off)."""
        with self.lock:
            sealed = self.sampler.seal_now()
        return "sealed the open window" if sealed else "nothing to seal yet"

    def update_rates(self) -> None:
        self.rates.update({source.name: source.health.frames for source in self.sources})

    def replay_finished(self) -> bool:
        finite = [s for s in self.sources if s.is_finite]
        return bool(finite) and all(s.finished.is_set() for s in finite)

    def stop(self) -> None:
        """Seal the open window, deliver what can be delivered in a few seconds, stop."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=5)
        with self.lock:
            self.sampler.finish()
        self.uplink.stop(timeout=SHUTDOWN_DELIVERY_TIMEOUT)
        self.spool.close()
        if self.control is not None:
            self.control.stop()
        log.info("agent stopped: %d batches sealed, %d acknowledged",
                 self.batcher.next_seq, self.uplink.health.acked)


def build_agent(config: AgentConfig) -> Agent:
    loaded = {source.name: load_dbc(source.dbc) for source in config.sources}
    plan = build_plan(config.sampling, {name: dbc.database for name, dbc in loaded.items()})
    ring = Ring.for_memory(config.ring.memory_mb,
                           frozenset(s.index for s in plan.signals if s.is_float))
    signer = Signer(load_private_key(config.keys.signing_key), CONTENT_TYPE)
    boot = os.urandom(16)

    healths = {source.name: SourceHealth() for source in config.sources}
    stores = {name: FrameStore(loaded[name].database, plan.for_source(name), healths[name])
              for name in loaded}
    sources = [open_source(source, stores[source.name].can_filters(), healths[source.name])
               for source in config.sources]
    spool = Spool(config.state.directory / "spool.sqlite", int(config.spool.max_mb * 2**20))
    liveness = Liveness()
    uplink = Uplink(config.uplink, config.vehicle.id, boot, spool,
                    beat=lambda: liveness.beat("uplink"))

    replaying = any(source.type == "replay" for source in config.sources)
    identity = BatchIdentity(
        vehicle=config.vehicle.id,
        boot=boot,
        config_version=config.version,
        dbc_digest=combined_digest([dbc.digest for dbc in loaded.values()]),
        clock=(lambda: clock.REPLAY) if replaying else clock.wall_clock_source,
    )

    def health() -> dict[str, int]:
        counters = {f"{name}.{key}": value for name, source_health in healths.items()
                    for key, value in source_health.counters().items()}
        counters.update({f"uplink.{key}": value
                         for key, value in uplink.health.counters().items()})
        spooled = spool.stats()
        counters.update({"spool.depth": spooled.depth, "spool.bytes": spooled.bytes,
                         "spool.evicted": spooled.evicted, "spool.not_kept": spooled.not_kept,
                         "spool.moved_aside": spooled.moved_aside})
        return counters

    batcher = Batcher(plan, ring, identity, signer, health, zstd_level=config.batch.zstd_level,
                      dictionary_every=config.batch.dictionary_every)

    def on_window(t0_ms: int, t1_ms: int) -> None:
        sealed = batcher.seal(t0_ms, t1_ms)
        spooled = spool.put("telemetry", boot, sealed.seq, sealed.envelope)
        _log_sealed(sealed, on_disk=spooled.id is not None)
        uplink.submit(spooled)

    sampler = Sampler(plan, ring, stores, round(config.batch.window * 1000), on_window)
    return Agent(config=config, sources=sources, stores=stores, sampler=sampler,
                 batcher=batcher, spool=spool, uplink=uplink, ring=ring, boot=boot,
                 lock=threading.Lock(), threads=[], stop_event=threading.Event(),
                 liveness=liveness)


def _log_sealed(batch: SealedBatch, *, on_disk: bool) -> None:
    log.info("sealed batch %d: %d samples, %d bytes (%.3f bytes/sample), %s", batch.seq,
             batch.samples, len(batch.envelope), len(batch.envelope) / max(1, batch.samples),
             "spooled" if on_disk else "in memory only")
