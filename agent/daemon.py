"""The agent's wiring: source → decode → sample → ring → batch → spool → uplink, top to bottom.

Each source runs in its own thread and hands its frames to the event-time gate, which feeds
the source's decoder store and moves the sampler's time only as far as every source has come
(agent/event_time.py); one lock serialises the gate, the stores and the sampler.
The config-dependent parts (a `Pipeline`) are rebuilt on a config change and swapped in
while the ring, the spool and the MQTT connection stay (agent/config_updates.py decides when).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import can
from cantools.database.can import Database

from agent import clock, privacy, sensor_status, status
from agent.at_rest import AtRest
from agent.batch import CONTENT_TYPE, Batcher, BatchIdentity, SealedBatch
from agent.catalogue import Catalogue
from agent.config import AgentConfig, SourceConfig, control_socket_path
from agent.config_updates import ConfigUpdater
from agent.control import Command, ControlServer
from agent.cose import Signer
from agent.dbc import LoadedDbc, combined_digest, load_source_dbc
from agent.decode import FrameStore
from agent.errors import AgentError
from agent.event_time import EventTimeGate, ReplayPacer
from agent.events.codec import EVENT_CONTENT_TYPE
from agent.events.engine import EventEngine, event_inputs
from agent.events.sink import EventCounters, EventIdentity, EventSequence, EventSink
from agent.handover import HandoverLock
from agent.health import SourceHealth, counters_at_off
from agent.health_watch import HealthSnapshot, SourceCounters
from agent.keys import load_private_key
from agent.location import LocationPolicy, TelemetryLocationFilter
from agent.plan import SamplingPlan, build_plan
from agent.ring import Ring
from agent.sampler import Sampler, check_ring_size
from agent.sources import Source, catalogue_for, is_value_source, open_source
from agent.sources.base import OnFrames
from agent.sources.canbus import unreachable_fd_messages
from agent.spool import SPOOL_FILE, Spool
from agent.status import FrameRates
from agent.uplink import Uplink
from agent.values import Reading, ValueStore
from agent.watchdog import Liveness

log = logging.getLogger(__name__)

SHUTDOWN_DELIVERY_TIMEOUT = 5.0
RELOAD_TIMEOUT = 4.0


@dataclass
class Pipeline:
    """What depends on the config: rebuilt by `build_pipeline` on every config change."""

    config: AgentConfig
    plan: SamplingPlan
    sources: list[Source]
    stores: dict[str, FrameStore | ValueStore]
    sampler: Sampler
    gate: EventTimeGate
    batcher: Batcher
    # Privacy and events: what may leave (wire_plan is the prefix of plan the batcher sends).
    consent: privacy.Consent
    wire_plan: SamplingPlan
    events: EventEngine


class Agent:
    """A wired agent, ready to `start`. Built by `build_agent`; parts exposed for diagnostics."""

    def __init__(self, config: AgentConfig, ring: Ring, spool: Spool, signer: Signer,
                 at_rest: AtRest) -> None:
        self.ring = ring
        self.spool = spool
        self.at_rest = at_rest
        self.signer = signer
        self.boot = os.urandom(16)
        self.lock = HandoverLock()
        self.liveness = Liveness()
        self.rates = FrameRates()
        self.pacer = ReplayPacer(config.sampling.max_lateness / 2)
        self.started = time.monotonic()
        self.control: ControlServer | None = None
        self.healths: dict[str, SourceHealth] = {}
        self.event_counters = EventCounters()
        self.event_seq = EventSequence()
        self.dropped_on_downgrade = 0
        self._running: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self.updater = ConfigUpdater(self, config.path, config.state.directory)
        self.uplink = self._make_uplink(config)
        self.pipeline = build_pipeline(config, self, None)
        ring.set_float_signals(_float_signals(self.pipeline))
        self._enforce_consent(self.pipeline.consent)

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
        self.started = time.monotonic()
        self.uplink.start()
        self.control = ControlServer(control_socket_path(self.config), self._commands(),
                                     group=self.config.control.group)
        self.control.start()
        for source in self.sources:
            self._start_source(source)
        self.updater.start()
        log.info("agent running: vehicle %s, boot %s, config version %d, %d sources, "
                 "%d signals", self.config.vehicle.id, self.boot.hex(), self.config.version,
                 len(self.sources), len(self.batcher.dictionary))

    def _start_source(self, source: Source) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._run_source, args=(source, stop),
                                  name=f"source-{source.name}", daemon=True)
        self._running[source.name] = (thread, stop)
        thread.start()

    def _stop_source(self, name: str) -> None:
        thread, stop = self._running.pop(name)
        stop.set()
        self.pacer.leave(name)  # a replay held back for the others must see the stop
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
            self.pacer.join(source.name)
        try:
            self._keep_running(source, name, stop)
        finally:
            self.pacer.leave(source.name)
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
        on_frames = self._frame_handler(source, name)
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

    def _frame_handler(self, source: Source, name: str) -> OnFrames:
        beat = self.liveness.beat
        lock = self.lock
        pace = partial(self.pacer.pace, source.name) if source.paced else None

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

    def _commands(self) -> dict[str, Command]:
        return {
            "status": Command(lambda args: status.status(self)),
            "buses": Command(lambda args: status.buses(self, int(args.get("top", 10)))),
            "signals": Command(lambda args: status.signal_values(self, args.get("glob", "*"))),
            "gps": Command(lambda args: sensor_status.gps(self)),
            "sensors": Command(lambda args: sensor_status.sensors(self)),
            "queue": Command(lambda args: self._queue(int(args.get("limit", 20)))),
            "flush": Command(lambda args: self.flush(), changes_state=True),
            "reconnect": Command(lambda args: self.uplink.reconnect(), changes_state=True),
            "reload": Command(lambda args: self.reload(), changes_state=True),
            "privacy": Command(lambda args: status.privacy(self)),
            "consent": Command(lambda args: self.set_consent(str(args.get("level", ""))),
                               changes_state=True),
            "erase": Command(lambda args: self.erase(), changes_state=True),
        }

    def _queue(self, limit: int) -> dict[str, object]:
        stats = self.spool.stats()
        return {"depth": stats.depth, "bytes": stats.bytes, "max_bytes": self.spool.max_bytes,
                "evicted": stats.evicted, "not_kept": stats.not_kept,
                "unreadable": stats.unreadable,
                "next": [{"seq": b.seq, "topic": b.topic, "bytes": len(b.envelope),
                          "priority": b.priority} for b in self.spool.next_batches(limit)]}

    def flush(self) -> str:
        """Seal the open window now (a tech wants to see data arrive, or before a power-off)."""
        with self.lock:
            sealed = self.sampler.seal_now()
        return "sealed the open window" if sealed else "nothing to seal yet"

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

    def erase(self) -> dict[str, object]:
        """`edge-agent privacy erase`: destroy every spool key, then drop every spooled row
        (unreadable already; dropping frees the space). Sampling goes on under the consent in
        force, sealed under new keys."""
        destroyed = self.at_rest.forget_above(-1)
        dropped = self.spool.drop_above(-1)
        log.warning("privacy: erased on request: %d spooled batches and events dropped",
                    dropped)
        return {"keys_destroyed": destroyed, "dropped": dropped}

    def _enforce_consent(self, consent: privacy.Consent) -> None:
        """Nothing sealed under a wider consent may still leave: its key is destroyed first
        (so it is unreadable even if the rows cannot be deleted now), then the rows."""
        try:
            self.at_rest.forget_above(consent.rank)
        except OSError:
            log.exception("privacy: cannot destroy the spool keys above consent %s",
                          consent.level)
        try:
            dropped = self.spool.drop_above(consent.rank)
        except Exception:
            log.exception("privacy: cannot drop spooled batches above consent %s",
                          consent.level)
            return
        if dropped:
            self.dropped_on_downgrade += dropped
            log.warning("privacy: consent is now %s: dropped %d spooled batches and events "
                        "sealed under a wider consent", consent.level, dropped)

    # Config changes (called by agent/config_updates.py, one at a time)
    def prepare(self, config: AgentConfig) -> Pipeline:
        return build_pipeline(config, self, self.pipeline)

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
            self.ring.set_float_signals(_float_signals(pipeline))
            pipeline.batcher.take_over(old.batcher)
            pipeline.events.take_over(old.events)
            if now_ms is not None:
                pipeline.sampler.resume_after(now_ms)
            for source in pipeline.sources:
                if source.finished.is_set():
                    pipeline.gate.retire(source.name)
            self.pacer.lead = pipeline.config.sampling.max_lateness / 2
            self.pipeline = pipeline
            if pipeline.consent.rank < old.consent.rank:
                self._enforce_consent(pipeline.consent)
        for source in pipeline.sources:
            if source.name not in self._running:
                self._start_source(source)
        if pipeline.config.uplink != old.config.uplink:
            previous, self.uplink = self.uplink, self._make_uplink(pipeline.config)
            previous.stop(timeout=SHUTDOWN_DELIVERY_TIMEOUT)
            self.uplink.start()
        log.info("config version %d running: %d sources, %d signals", pipeline.config.version,
                 len(pipeline.sources), len(pipeline.batcher.dictionary))

    def health_snapshot(self) -> HealthSnapshot:
        with self.lock:
            samples = self.ring.written
        return HealthSnapshot(
            sources={s.name: SourceCounters(
                s.health.frames, s.health.reconnects,
                s.health.frames - s.health.ignored - s.health.error_frames)
                for s in self.sources},
            samples=samples, uplink_connected=self.uplink.health.connected,
            uplink_connects=self.uplink.health.connects)

    def publish(self, leaf: str, payload: bytes) -> None:
        self.uplink.publish(leaf, payload)

    def _make_uplink(self, config: AgentConfig) -> Uplink:
        return Uplink(config.uplink, config.vehicle.id, self.boot, self.spool,
                      beat=lambda: self.liveness.beat("uplink"), on_config=self.updater.offer)

    def health_counters(self) -> dict[str, int]:
        counters = {f"{source.name}.{key}": value for source in self.sources
                    for key, value in source.health.counters().items()}
        counters.update({f"uplink.{key}": value
                         for key, value in self.uplink.health.counters().items()})
        spooled = self.spool.stats()
        counters.update({"spool.depth": spooled.depth, "spool.bytes": spooled.bytes,
                         "spool.evicted": spooled.evicted, "spool.not_kept": spooled.not_kept,
                         "spool.moved_aside": spooled.moved_aside,
                         "spool.unreadable": spooled.unreadable})
        return counters

    def on_window(self, batcher: Batcher, consent: privacy.Consent) -> Callable[[int, int], None]:
        def seal(t0_ms: int, t1_ms: int) -> None:
            sealed = batcher.seal(t0_ms, t1_ms)
            spooled = self.spool.put("telemetry", self.boot, sealed.seq, sealed.envelope,
                                     consent=consent.rank)
            _log_sealed(sealed, on_disk=spooled.id is not None)
            self.uplink.submit(spooled)

        return seal

    def update_rates(self) -> None:
        self.rates.update({source.name: source.health.frames for source in self.sources})

    def replay_finished(self) -> bool:
        finite = [s for s in self.sources if s.is_finite]
        return bool(finite) and all(s.finished.is_set() for s in finite)

    def stop(self) -> None:
        """Seal the open window, deliver what can be delivered in a few seconds, stop."""
        self.updater.stop()
        for name in list(self._running):
            self._running[name][1].set()
            self.pacer.leave(name)
        for name in list(self._running):
            self._stop_source(name)
        with self.lock:
            self.pipeline.gate.drain()
            self.sampler.finish()
        self.uplink.stop(timeout=SHUTDOWN_DELIVERY_TIMEOUT)
        self.spool.close()
        if self.control is not None:
            self.control.stop()
        log.info("agent stopped: %d batches sealed, %d acknowledged",
                 self.batcher.next_seq, self.uplink.health.acked)


def build_agent(config: AgentConfig) -> Agent:
    at_rest = AtRest(config.state.directory)
    spool = Spool(config.state.directory / SPOOL_FILE, int(config.spool.max_mb * 2**20),
                  at_rest=at_rest)
    signer = Signer(load_private_key(config.keys.signing_key), CONTENT_TYPE)
    return Agent(config, Ring.for_memory(config.ring.memory_mb), spool, signer, at_rest)


def load_plan(config: AgentConfig) -> tuple[dict[str, LoadedDbc],
                                            dict[str, Database | Catalogue], SamplingPlan]:
    """The DBCs, every source's database or catalogue, and the sampling plan of `config`
    (raises AgentError when they do not build)."""
    loaded = {source.name: load_source_dbc(source) for source in config.sources
              if not is_value_source(source)}
    databases = {source.name: loaded[source.name].database if source.name in loaded
                 else catalogue_for(source) for source in config.sources}
    return loaded, databases, build_plan(config.sampling, databases)


def build_pipeline(config: AgentConfig, agent: Agent, previous: Pipeline | None) -> Pipeline:
    """Sources, stores, sampler and batcher for `config`. A source of `previous` whose config
    and filters are unchanged is kept (a replay goes on playing, a bus stays open)."""
    loaded, databases, configured = load_plan(config)
    for source in config.sources:
        if source.name in loaded and (names := unreachable_fd_messages(
                source, loaded[source.name].database, configured.frame_ids(source.name))):
            log.warning("source %s: the plan needs CAN FD messages (%s) but the bus is opened "
                        "without fd = true: they never arrive", source.name, ", ".join(names))
    consent = privacy.effective_consent(config.privacy, config.state.directory)
    classify = privacy.classifier_for(config.privacy)
    wire_plan = privacy.filter_plan(configured, consent, classify,
                                    tracks=config.privacy.location.tracks)
    plan = privacy.with_local_inputs(wire_plan, event_inputs(
        config.events, databases, config.sampling, privacy.location_keys(config.privacy)))
    sources = []
    stores = {}
    for source_config in config.sources:
        name = source_config.name
        health = agent.healths.setdefault(name, SourceHealth())
        stores[name] = (ValueStore(plan.for_source(name), health) if name not in loaded
                        else FrameStore(loaded[name].database, plan.for_source(name), health))
        filters = stores[name].can_filters()
        kept = _unchanged_source(previous, source_config, filters)
        sources.append(kept or open_source(source_config, filters, health))
    replaying = any(source.type == "replay" for source in config.sources)
    wire_identity = privacy.Identity(config.vehicle.id, config.privacy.pseudonym)
    name_at = wire_identity.at if wire_identity.pseudonymous else None
    identity = BatchIdentity(
        vehicle=config.vehicle.id,
        boot=agent.boot,
        config_version=config.version,
        dbc_digest=combined_digest([dbc.digest for dbc in loaded.values()]),
        clock=(lambda: clock.REPLAY) if replaying else clock.wall_clock_source,
        gps_correction=(lambda: None) if replaying else clock.gps_correction_ms,
        privacy=consent.wire(),
        name_at=name_at,
    )
    location = LocationPolicy(config.privacy.location, config.privacy.zones)
    location_filter = TelemetryLocationFilter(location, wire_plan,
                                              lambda key: classify(key) == "location")
    # At consent off the counters say nothing of use, only of faults (agent/health.py).
    health_counters = (agent.health_counters if consent.rank > 0
                       else lambda: counters_at_off(agent.health_counters()))
    batcher = Batcher(wire_plan, agent.ring, identity, agent.signer, health_counters,
                      zstd_level=config.batch.zstd_level,
                      dictionary_every=config.batch.dictionary_every,
                      schema=config.batch.schema,
                      transform=location_filter if location_filter.active else None)
    sink = EventSink(consent, classify, location,
                     EventIdentity(agent.boot, config.version, wire_identity.at, identity.clock),
                     agent.signer.for_content(EVENT_CONTENT_TYPE), agent.spool,
                     lambda spooled: agent.uplink.submit(spooled), agent.event_counters,
                     agent.event_seq)
    events = EventEngine(config.events, config.privacy.location, plan, agent.ring, sink)
    window_ms = round(config.batch.window * 1000)
    check_ring_size(agent.ring, plan, window_ms)
    sampler = Sampler(plan, agent.ring, stores, window_ms, agent.on_window(batcher, consent),
                      on_tick=events.on_tick)
    gate = EventTimeGate(sampler, stores, agent.healths, config.sampling.max_lateness,
                         window_ms)
    return Pipeline(config, plan, sources, stores, sampler, gate, batcher, consent, wire_plan,
                    events)


def _unchanged_source(previous: Pipeline | None, config: SourceConfig,
                      filters: list[dict[str, int | bool]]) -> Source | None:
    if previous is None or config not in previous.config.sources:
        return None
    if config.type != "replay" and previous.stores[config.name].can_filters() != filters:
        return None
    return next(s for s in previous.sources if s.name == config.name)


def _float_signals(pipeline: Pipeline) -> frozenset[int]:
    return frozenset(s.index for s in pipeline.plan.signals if s.is_float)


def _log_sealed(batch: SealedBatch, *, on_disk: bool) -> None:
    log.info("sealed batch %d: %d samples, %d bytes (%.3f bytes/sample), %s", batch.seq,
             batch.samples, len(batch.envelope), len(batch.envelope) / max(1, batch.samples),
             "spooled" if on_disk else "in memory only")
