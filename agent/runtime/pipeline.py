"""What depends on the config: sources → stores → sampler → batcher (and events), built from a
few shared parts that outlive every config change.

`build_pipeline` is handed `SharedParts` (the ring, the spool, the signer, the boot id, the
sources' health counters, the event counters and a function that submits a spooled batch to
the uplink), never the agent: what a pipeline depends on is this list and nothing else. The
daemon (agent/runtime/daemon.py) builds one at start and another on every config change, and
swaps it in while the shared parts stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from agent.config.schema import AgentConfig, SourceConfig
from agent.decoding.cache import DbcCache
from agent.decoding.dbc import LoadedDbc, combined_digest, load_source_dbc
from agent.decoding.frames import FrameStore
from agent.decoding.tables import DbcTables
from agent.decoding.values import ValueStore
from agent.events.codec import EVENT_CONTENT_TYPE
from agent.events.engine import EventEngine, event_inputs
from agent.events.sink import EventCounters, EventIdentity, EventSequence, EventSink
from agent.output.batch import Batcher, BatchIdentity, SealedBatch, size_per_sample
from agent.output.spool import Spool, SpooledBatch
from agent.output.uplink import UplinkStats
from agent.privacy import consent as privacy
from agent.privacy.location import LocationPolicy, TelemetryLocationFilter
from agent.runtime import clock
from agent.sampling.event_time import EventTimeGate
from agent.sampling.frame_time import FrameTimeSampler
from agent.sampling.plan import SamplingPlan, build_plan
from agent.sampling.ring import Ring
from agent.sampling.sampler import Sampler, check_ring_size
from agent.sources.base import Source
from agent.sources.canbus import unreachable_fd_messages
from agent.sources.catalogue import Catalogue
from agent.sources.health import SourceHealth, counters_at_off
from agent.sources.registry import catalogue_for, is_value_source, open_source, source_type
from agent.wire.cose import Signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthCounters:
    """The counters every batch carries: the sources of its config, the uplink, the spool."""

    healths: Mapping[str, SourceHealth]
    uplink: Callable[[], UplinkStats]
    spool: Spool

    def of(self, sources: Sequence[str]) -> dict[str, int]:
        counters = {f"{name}.{key}": value for name in sources
                    for key, value in self.healths[name].counters().items()}
        counters.update({f"uplink.{key}": value
                         for key, value in self.uplink().counters().items()})
        spooled = self.spool.stats()
        counters.update({"spool.depth": spooled.depth, "spool.bytes": spooled.bytes,
                         "spool.evicted": spooled.evicted, "spool.not_kept": spooled.not_kept,
                         "spool.moved_aside": spooled.moved_aside,
                         "spool.unreadable": spooled.unreadable})
        return counters

    def of_faults(self, sources: Sequence[str]) -> dict[str, int]:
        """What a batch may carry at consent `off`: the agent's own faults, no traffic."""
        return counters_at_off(self.of(sources))


@dataclass(frozen=True)
class SharedParts:
    """What every pipeline is built on, kept across config changes."""

    ring: Ring
    spool: Spool
    signer: Signer
    boot: bytes
    # One SourceHealth per source name, ever: a source kept or re-added keeps its counters.
    healths: dict[str, SourceHealth]
    health: HealthCounters
    event_counters: EventCounters
    event_seq: EventSequence
    # Hands a spooled batch or event to the uplink in service now.
    submit: Callable[[SpooledBatch], None]


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
    frame_time: FrameTimeSampler | None = None

    def float_signals(self) -> frozenset[int]:
        return frozenset(s.index for s in self.plan.signals if s.is_float)


def load_plan(config: AgentConfig) -> tuple[dict[str, LoadedDbc],
                                            dict[str, DbcTables | Catalogue], SamplingPlan]:
    """The DBCs, every source's tables or catalogue, and the sampling plan of `config`
    (raises AgentError when they do not build)."""
    cache = DbcCache.in_state(config.state.directory)
    loaded = {source.name: load_source_dbc(source, cache) for source in config.sources
              if not is_value_source(source)}
    databases = {source.name: loaded[source.name].tables if source.name in loaded
                 else catalogue_for(source) for source in config.sources}
    plan = build_plan(config.sampling, databases)
    for match in plan.unmatched:
        log.warning("sampling rule %r matches no signal of any source", match)
    return loaded, databases, plan


def build_pipeline(config: AgentConfig, parts: SharedParts,
                   previous: Pipeline | None) -> Pipeline:
    """Sources, stores, sampler and batcher for `config`. A source of `previous` whose config
    and filters are unchanged is kept (a replay goes on playing, a bus stays open)."""
    loaded, databases, configured = load_plan(config)
    for source in config.sources:
        if source.name in loaded and (names := unreachable_fd_messages(
                source, loaded[source.name].tables, configured.frame_ids(source.name))):
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
    frame_time = FrameTimeSampler(plan, parts.ring)  # `change` and `bounded` signals
    for source_config in config.sources:
        name = source_config.name
        health = parts.healths.setdefault(name, SourceHealth())
        stores[name] = (ValueStore(plan.for_source(name), health, frame_time)
                        if name not in loaded
                        else FrameStore(loaded[name].database, plan.for_source(name), health,
                                        frame_time))
        filters = stores[name].can_filters()
        kept = _unchanged_source(previous, source_config, filters)
        sources.append(kept or open_source(source_config, filters, health))
    replaying = any(source_type(source.type).recorded for source in config.sources)
    wire_identity = privacy.Identity(config.vehicle.id, config.privacy.pseudonym)
    name_at = wire_identity.at if wire_identity.pseudonymous else None
    identity = BatchIdentity(
        vehicle=config.vehicle.id,
        boot=parts.boot,
        config_version=config.version,
        dbc_digest=combined_digest([dbc.digest for dbc in loaded.values()]),
        clock=(lambda: clock.REPLAY) if replaying else clock.wall_clock_source,
        gps_correction=(lambda: None) if replaying else clock.gps_correction_ms,
        privacy=consent.wire(),
        name_at=name_at,
    )
    location = LocationPolicy(config.privacy.location, config.privacy.zones)
    location_filter = TelemetryLocationFilter(location, wire_plan,
                                              partial(_is_location, classify))
    names = tuple(s.name for s in config.sources)
    # At consent off the counters say nothing of use, only of faults (agent/sources/health.py).
    health = partial(parts.health.of if consent.rank > 0 else parts.health.of_faults, names)
    batcher = Batcher(wire_plan, parts.ring, identity, parts.signer, health,
                      zstd_level=config.batch.zstd_level,
                      dictionary_every=config.batch.dictionary_every,
                      heartbeat_ms=round(config.batch.heartbeat * 1000),
                      schema=config.batch.schema,
                      transform=location_filter if location_filter.active else None)
    sink = EventSink(consent, classify, location,
                     EventIdentity(parts.boot, config.version, wire_identity.at, identity.clock),
                     parts.signer.for_content(EVENT_CONTENT_TYPE), parts.spool, parts.submit,
                     parts.event_counters, parts.event_seq)
    events = EventEngine(config.events, config.privacy.location, plan, parts.ring, sink)
    window_ms = round(config.batch.window * 1000)
    check_ring_size(parts.ring, plan, window_ms)
    sampler = Sampler(plan, parts.ring, stores, window_ms,
                      partial(_seal_window, batcher, consent, parts, frame_time, window_ms),
                      on_tick=events.on_tick)
    gate = EventTimeGate(sampler, stores, parts.healths, config.sampling.max_lateness,
                         window_ms)
    return Pipeline(config, plan, sources, stores, sampler, gate, batcher, consent, wire_plan,
                    events, frame_time)


def _is_location(classify: privacy.Classifier, key: str) -> bool:
    return classify(key) == "location"


def _seal_window(batcher: Batcher, consent: privacy.Consent, parts: SharedParts,
                 frame_time: FrameTimeSampler, window_ms: int, t0_ms: int, t1_ms: int) -> None:
    """A window closed: seal it, commit it to the spool, then offer it to the uplink
    (unless nothing was sampled in it and no heartbeat is due)."""
    # The points `bounded` held back belong to this window; a whole window's end is the next
    # one's start (a partial one, at shutdown or a time jump, is followed by none).
    frame_time.flush(t1_ms if t1_ms % window_ms == 0 else None)
    sealed = batcher.seal_window(t0_ms, t1_ms)
    if sealed is None:
        return
    spooled = parts.spool.put("telemetry", parts.boot, sealed.seq, sealed.envelope,
                              consent=consent.rank)
    _log_sealed(sealed, on_disk=spooled.id is not None)
    parts.submit(spooled)


def _unchanged_source(previous: Pipeline | None, config: SourceConfig,
                      filters: list[dict[str, int | bool]]) -> Source | None:
    if previous is None or config not in previous.config.sources:
        return None
    if (not source_type(config.type).recorded
            and previous.stores[config.name].can_filters() != filters):
        return None
    return next(s for s in previous.sources if s.name == config.name)


def _log_sealed(batch: SealedBatch, *, on_disk: bool) -> None:
    log.info("sealed batch %d: %d samples, %s, %s", batch.seq, batch.samples,
             size_per_sample(len(batch.envelope), batch.samples),
             "spooled" if on_disk else "in memory only")
