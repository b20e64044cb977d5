"""The agent's wiring: source → decode → sample → ring → batch → spool → uplink, top to bottom.

Each source runs in its own thread and hands its frames to the event-time gate, which feeds
the source's decoder store and moves the sampler's time only as far as every source has come
(agent/sampling/event_time.py); one lock serialises the gate, the stores and the sampler.
The config-dependent parts (a `Pipeline`, agent/runtime/pipeline.py) are rebuilt on a config
change and swapped in while the shared parts (ring, spool, signer, MQTT connection) stay
(agent/ota/updater.py decides when). `build_agent` makes every part, in the order they
depend on each other.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

import can

from agent.config.schema import AgentConfig, control_socket_path
from agent.decoding.frames import FrameStore
from agent.decoding.values import ValueStore
from agent.errors import AgentError
from agent.events.fetch import FetchHandler, FetchMemory, FetchSource
from agent.events.sink import EventCounters, EventSequence
from agent.ota.update import Trust, load_trust
from agent.ota.updater import ConfigUpdater, ota_active
from agent.ota.verdict import HealthSnapshot, SourceCounters
from agent.output.batch import CONTENT_TYPE, Batcher
from agent.output.spool import SPOOL_FILE, Spool, SpooledBatch
from agent.output.uplink import Uplink, UplinkStats
from agent.privacy import consent as privacy
from agent.privacy.at_rest import AtRest
from agent.privacy.downgrade import Downgrades
from agent.runtime.commands import command_table
from agent.runtime.control import ControlServer
from agent.runtime.handover import HandoverLock
from agent.runtime.pipeline import HealthCounters, Pipeline, SharedParts, build_pipeline
from agent.runtime.rates import FrameRates
from agent.runtime.status import AgentSnapshot, LatestValue, PrivacyStats
from agent.runtime.watchdog import Liveness
from agent.sampling.event_time import ReplayPacer
from agent.sampling.ring import Ring
from agent.sampling.sampler import Sampler
from agent.sources.base import OnFrames, Reading
from agent.sources.health import SourceHealth
from agent.sources.registry import Source, source_stats
from agent.wire.cose import Signer
from agent.wire.dictionary import dictionary_leaf
from agent.wire.keys import load_private_key

log = logging.getLogger(__name__)

SHUTDOWN_DELIVERY_TIMEOUT = 5.0
RELOAD_TIMEOUT = 4.0


class UplinkSlot:
    """The uplink in service. A config change of [uplink] puts a new one in its place; the
    pipelines submit through the slot, so they reach whichever is in service."""

    def __init__(self) -> None:
        self._uplink: Uplink | None = None

    @property
    def uplink(self) -> Uplink:
        assert self._uplink is not None, "the agent puts an uplink in before it starts"
        return self._uplink

    def put(self, uplink: Uplink) -> Uplink | None:
        """Put `uplink` in service; returns the one it replaces."""
        previous, self._uplink = self._uplink, uplink
        return previous

    def submit(self, spooled: SpooledBatch) -> None:
        self.uplink.submit(spooled)

    def stats(self) -> UplinkStats:
        return self.uplink.stats()


def build_agent(config: AgentConfig) -> Agent:
    """Every part of the agent, in the order they depend on each other."""
    at_rest = AtRest(config.state.directory)
    spool = Spool(config.state.directory / SPOOL_FILE, int(config.spool.max_mb * 2**20),
                  at_rest=at_rest)
    signer = Signer(load_private_key(config.keys.signing_key), CONTENT_TYPE)
    ring = Ring.for_memory(config.ring.memory_mb)
    uplinks = UplinkSlot()
    healths: dict[str, SourceHealth] = {}
    parts = SharedParts(ring=ring, spool=spool, signer=signer, boot=os.urandom(16),
                        healths=healths, health=HealthCounters(healths, uplinks.stats, spool),
                        event_counters=EventCounters(), event_seq=EventSequence(),
                        submit=uplinks.submit)
    pipeline = build_pipeline(config, parts, None)
    # The agent makes the config updater (which calls back its prepare and switch), then the
    # uplink that offers the updater what arrives on the config topic.
    return Agent(parts, uplinks, pipeline, Downgrades(spool, at_rest))


class Agent:
    """A wired agent, ready to `start`: runs the sources, swaps pipelines on a config change,
    and reports itself to diagnostics as one `snapshot()`."""

    def __init__(self, parts: SharedParts, uplinks: UplinkSlot, pipeline: Pipeline,
                 downgrades: Downgrades) -> None:
        config = pipeline.config
        self.parts = parts
        self.pipeline = pipeline
        self.lock = HandoverLock()
        self.liveness = Liveness()
        self._uplinks = uplinks
        self._rates = FrameRates()
        self._downgrades = downgrades
        self._pacer = ReplayPacer(config.sampling.max_lateness / 2)
        self._started = time.monotonic()
        self._control: ControlServer | None = None
        self._running: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.updater = ConfigUpdater(self, config.path, config.state.directory)
        self.fetcher = FetchHandler(self._fetch_trust, FetchMemory(config.state.directory),
                                    self._on_pipeline, self.publish)
        uplinks.put(self._make_uplink(config))
        self._publish_dictionary()
        parts.ring.set_float_signals(pipeline.float_signals())
        self._downgrades.enforce(pipeline.consent)

    @property
    def config(self) -> AgentConfig:
        return self.pipeline.config

    @property
    def sources(self) -> list[Source]:
        return self.pipeline.sources

    @property
    def stores(self) -> dict[str, FrameStore | ValueStore]:
        return self.pipeline.stores

    @property
    def sampler(self) -> Sampler:
        return self.pipeline.sampler

    @property
    def batcher(self) -> Batcher:
        return self.pipeline.batcher

    def start(self) -> None:
        self._started = time.monotonic()
        self._uplinks.uplink.start()
        self._control = ControlServer(control_socket_path(self.config), command_table(self),
                                      group=self.config.control.group)
        self._control.start()
        for source in self.sources:
            self._start_source(source)
        self.updater.start()
        self.fetcher.start()
        log.info("agent running: vehicle %s, boot %s, config version %d, %d sources, "
                 "%d signals", self.config.vehicle.id, self.parts.boot.hex(),
                 self.config.version, len(self.sources), len(self.batcher.dictionary))

    def _start_source(self, source: Source) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._run_source, args=(source, stop),
                                  name=f"source-{source.name}", daemon=True)
        self._running[source.name] = (thread, stop)
        thread.start()

    def _stop_source(self, name: str) -> None:
        thread, stop = self._running.pop(name)
        stop.set()
        self._pacer.leave(name)  # a replay held back for the others must see the stop
        thread.join(timeout=5)
        self.liveness.retire(f"source {name}")

    # A source whose `run` raised is run again after a wait that doubles from the first to the
    # longest (a bug that strikes at once must not spin); a run that lasted longer than the
    # longest wait had recovered, so its failure starts from the first wait again.
    SOURCE_RESTART_FIRST = 1.0
    SOURCE_RESTART_LONGEST = 60.0

    def _run_source(self, source: Source, stop: threading.Event) -> None:
        name = f"source {source.name}"
        self.liveness.beat(name)
        if source.paced:
            self._pacer.join(source.name)
        try:
            self._keep_running(source, name, stop)
        finally:
            self._pacer.leave(source.name)
        if source.finished.is_set():
            with self.lock:
                gate = self.pipeline.gate
                if source.name in self.pipeline.stores:
                    gate.retire(source.name)
            self.liveness.retire(name)

    def _keep_running(self, source: Source, name: str, stop: threading.Event) -> None:
        """Run `source` until it returns or `stop` is set, whatever it raises: each failure
        is counted in its health (`failures`, `last_failure`), the first of each kind is
        logged with its traceback, and the source is run again after a bounded back-off."""
        on_frames = self.frame_handler(source, name)
        on_idle = self._idle_handler(source.name, name)
        logged: set[str] = set()
        wait = self.SOURCE_RESTART_FIRST
        while not stop.is_set():
            started = time.monotonic()
            try:
                source.run(on_frames, on_idle, stop)
                return
            except Exception as exc:
                if time.monotonic() - started > self.SOURCE_RESTART_LONGEST:
                    wait = self.SOURCE_RESTART_FIRST
                kind = type(exc).__name__
                source.health.failures += 1
                source.health.last_failure = f"{kind}: {exc}"[:200]
                if kind not in logged:
                    logged.add(kind)
                    log.exception("source %s failed (%s); restarting it in %.0f s (further "
                                  "%s failures are counted, not logged)", source.name, kind,
                                  wait, kind)
            # Only liveness is kept up meanwhile: the event-time gate stops waiting for a
            # source that lags the others by more than max_lateness.
            deadline = time.monotonic() + wait
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                self.liveness.beat(name)
                stop.wait(min(left, 1.0))
            wait = min(wait * 2, self.SOURCE_RESTART_LONGEST)

    def frame_handler(self, source: Source, name: str) -> OnFrames:
        """What `source` hands its frames to (its thread's `on_frames`; `name` is its loop in
        the watchdog). Public for the benchmark, which feeds the real path directly."""
        beat = self.liveness.beat
        lock = self.lock
        pace = partial(self._pacer.pace, source.name) if source.paced else None

        def keep(frames: Sequence[can.Message | Reading]) -> None:
            pipeline = self.pipeline  # swapped on a config change
            if source.name in pipeline.stores:
                pipeline.gate.offer(source.name, frames)

        def on_frames(frames: Sequence[can.Message | Reading]) -> None:
            if pace is not None:
                pace(frames[-1].timestamp)
            lock.submit(partial(keep, frames))
            beat(name)

        return on_frames

    def _idle_handler(self, source: str, name: str) -> Callable[[float], None]:
        def on_idle(now: float) -> None:
            with self.lock:
                pipeline = self.pipeline
                if source in pipeline.stores:
                    pipeline.gate.idle(source, now)
            self.liveness.beat(name)

        return on_idle

    # Diagnostics: snapshots of the parts, never their locks or private state.
    def snapshot(self) -> AgentSnapshot:
        pipeline = self.pipeline  # one pipeline throughout, even if a switch comes meanwhile
        return AgentSnapshot(
            config=pipeline.config, boot=self.parts.boot,
            uptime_s=time.monotonic() - self._started,
            last_update=self.updater.last_outcome,
            sources=tuple(source_stats(source, config) for source, config
                          in zip(pipeline.sources, pipeline.config.sources, strict=True)),
            frame_rates=self._rates.stats(),
            stores={name: store.stats() for name, store in pipeline.stores.items()},
            ring=self.parts.ring.stats(), batches=pipeline.batcher.stats(),
            spool=self.parts.spool.stats(), spool_max_bytes=self.parts.spool.max_bytes,
            uplink=self._uplinks.stats(),
            privacy=PrivacyStats(
                consent=pipeline.consent, signals_sent=len(pipeline.wire_plan.signals),
                signals_planned=len(pipeline.plan.signals),
                dropped_on_downgrade=self._downgrades.dropped, events=pipeline.events.stats(),
                delivery=self.parts.event_counters.stats()),
            fetch=self.fetcher.counters.snapshot())

    def readings(self) -> dict[str, list[LatestValue]]:
        """The latest value of every planned signal, by source (copied under the lock the
        pipeline holds while it writes them)."""
        with self.lock:
            return {name: store.current_values() for name, store in self.stores.items()}

    def update_rates(self) -> None:
        self._rates.update({source.name: source.health.frames for source in self.sources})

    def queue(self, limit: int) -> dict[str, object]:
        stats = self.parts.spool.stats()
        return {"depth": stats.depth, "bytes": stats.bytes, "max_bytes": self.parts.spool.max_bytes,
                "evicted": stats.evicted, "not_kept": stats.not_kept,
                "unreadable": stats.unreadable,
                "next": [{"seq": b.seq, "topic": b.topic, "bytes": len(b.envelope),
                          "priority": b.priority} for b in self.parts.spool.next_batches(limit)]}

    def flush(self) -> str:
        """Seal the open window now (a tech wants to see data arrive, or before a power-off)."""
        with self.lock:
            before = self.batcher.stats().sealed
            closed = self.sampler.seal_now()
            sealed = self.batcher.stats().sealed > before
        if sealed:
            return "sealed the open window"
        # A window in which nothing was sampled is left out (a parked car; wire-format §7).
        return "nothing was sampled in the open window: no batch" if closed \
            else "nothing to seal yet"

    def erase(self) -> dict[str, object]:
        return self._downgrades.erase()

    def reconnect(self) -> str:
        return self._uplinks.uplink.reconnect()

    def reload(self, timeout: float = RELOAD_TIMEOUT) -> str:
        """Re-read the local config file (as SIGHUP does) and say how it went."""
        outcome: queue.Queue[tuple[str | None, str]] = queue.Queue()
        self.updater.reload_local(lambda error, message: outcome.put((error, message)))
        try:
            error, message = outcome.get(timeout=timeout)
        except queue.Empty:
            return "reload queued behind a config update under watch; see the log"
        if error is not None:
            raise AgentError(f"config rejected, still running version "
                             f"{self.config.version}: {error}")
        return message

    def set_consent(self, level: str) -> str:
        """The owner's local decision: recorded in the state folder with a version above the
        one in force, then applied like any config change (a reload), window by window."""
        decided = privacy.write_local_consent(self.config.state.directory, level,
                                              self.pipeline.consent)
        outcome = self.reload()
        return f"consent {decided.level} (version {decided.version}) recorded; {outcome}"

    # Config changes (called by agent/ota/updater.py, one at a time)
    def prepare(self, config: AgentConfig) -> Pipeline:
        return build_pipeline(config, self.parts, self.pipeline)

    def switch(self, pipeline: Pipeline) -> None:
        """Swap in `pipeline`: the open window is sealed with the old config first, so the
        next batch is the first of the new one; sources whose config is unchanged go on."""
        old = self.pipeline
        for source in old.sources:
            if source not in pipeline.sources:
                self._stop_source(source.name)
        with self.lock:
            old.gate.drain()
            now_ms = old.sampler.now_ms
            old.sampler.finish()
            self.parts.ring.set_float_signals(pipeline.float_signals())
            pipeline.batcher.take_over(old.batcher)
            pipeline.events.take_over(old.events)
            if now_ms is not None:
                pipeline.sampler.resume_after(now_ms)
            for source in pipeline.sources:
                if source.finished.is_set():
                    pipeline.gate.retire(source.name)
            self._pacer.lead = pipeline.config.sampling.max_lateness / 2
            self.pipeline = pipeline
            if pipeline.consent.rank < old.consent.rank:
                self._downgrades.enforce(pipeline.consent)
        for source in pipeline.sources:
            if source.name not in self._running:
                self._start_source(source)
        if pipeline.config.uplink != old.config.uplink:
            previous = self._uplinks.put(self._make_uplink(pipeline.config))
            assert previous is not None
            previous.stop(timeout=SHUTDOWN_DELIVERY_TIMEOUT)
            self._uplinks.uplink.start()
        self._publish_dictionary()
        log.info("config version %d running: %d sources, %d signals", pipeline.config.version,
                 len(pipeline.sources), len(pipeline.batcher.dictionary))

    def health_snapshot(self) -> HealthSnapshot:
        with self.lock:
            samples = self.parts.ring.written
        uplink = self._uplinks.stats()
        return HealthSnapshot(
            sources={s.name: SourceCounters(
                s.health.frames, s.health.reconnects,
                s.health.frames - s.health.ignored - s.health.error_frames)
                for s in self.sources},
            samples=samples, uplink_connected=uplink.connected,
            uplink_connects=uplink.connects)

    def publish(self, leaf: str, payload: bytes) -> None:
        self._uplinks.uplink.publish(leaf, payload)

    def _publish_dictionary(self) -> None:
        """The signed dictionary, retained on its own topic now and at every connect."""
        batcher = self.pipeline.batcher
        self._uplinks.uplink.retain("dictionary", dictionary_leaf(batcher.dictionary_id),
                                    batcher.dictionary_envelope())

    def _make_uplink(self, config: AgentConfig) -> Uplink:
        return Uplink(config.uplink, config.vehicle.id, self.parts.boot, self.parts.spool,
                      beat=partial(self.liveness.beat, "uplink"), on_config=self.updater.offer,
                      on_fetch=self.fetcher.offer)

    def _fetch_trust(self) -> Trust | None:
        """Fetch requests are trusted like config updates, or not at all."""
        config = self.config
        if not ota_active(config):
            return None
        try:
            return load_trust(config)
        except AgentError as exc:
            log.error("fetch: cannot read [ota] trusted_keys: %s", exc)
            return None

    def _on_pipeline(self, work: Callable[[FetchSource], None]) -> None:
        """Run a fetch on the pipeline in service, under the lock the sampler holds while it
        writes the ring and the detectors send events."""
        with self.lock:
            pipeline = self.pipeline
            events = pipeline.events
            classify = privacy.classifier_for(pipeline.config.privacy)
            work(FetchSource(tuple(events.signals), events.newest_ms(), events.capture,
                             events.emit,
                             lambda key: classify(key) in pipeline.consent.allowed))

    def replay_finished(self) -> bool:
        finite = [s for s in self.sources if s.is_finite]
        return bool(finite) and all(s.finished.is_set() for s in finite)

    def stop(self) -> None:
        """Seal the open window, deliver what can be delivered in a few seconds, stop."""
        self.updater.stop()
        self.fetcher.stop()
        for name in list(self._running):
            self._running[name][1].set()
            self._pacer.leave(name)
        for name in list(self._running):
            self._stop_source(name)
        with self.lock:
            self.pipeline.gate.drain()
            self.sampler.finish()
        self._uplinks.uplink.stop(timeout=SHUTDOWN_DELIVERY_TIMEOUT)
        self.parts.spool.close()
        if self._control is not None:
            self._control.stop()
        log.info("agent stopped: %d batches sealed, %d acknowledged",
                 self.batcher.next_seq, self._uplinks.stats().acked)
