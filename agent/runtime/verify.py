"""`edge-agent verify`: the daemon's own decode and sampling against cantools, sample by sample.

The agent runs for real on a recorded log (every CAN source of the config becomes a replay of
its channel of the log; no broker: batches stay in a throwaway spool) and its sealed batches
are decoded as the backend decodes them. Beside it, an oracle written from the sampling rules
alone (agent/sampling/sampler.py) reads the same log with cantools:

- a `last` sample at tick T is the newest frame of its message (of its multiplexer page)
  stamped before T, if no older than `stale_after`, decoded by cantools; a frame that does not
  hold the signal (a short frame) gives no sample;
- a `stats` sample labelled L summarises the frames stamped in [L, L + period);
- ticks run at whole multiples of each period from the log's first frame to its last;
- `change` (agent/sampling/change.py states the rule): the oracle applies the rule to cantools'
  raw values of every frame carrying the signal, and every sample it gives must be present at
  its frame time, with nothing else; that includes the value held at each window start t0
  (after the first window), stamped t0: the last frame before t0, if it came at most a
  heartbeat before;
- `bounded`: every frame carrying the signal must lie within ε of the agent's lines
  (agent/sampling/curve.py), and every point must be a frame (its time and exact value) or the
  value held at a window bound: at a window start t0, the value of the last frame before t0;
  at a window's last ms (t1 - 1), the value of the last frame at or before it.

The two must agree exactly (floats bit for bit, NaN included); stats means to 1e-9; a
`bounded` reconstruction to ε (plus 1e-9 of it, and 1e-12 of the value, for float rounding).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
from cantools.database.can import Database, Message
from cantools.database.utils import create_encode_decode_formats, decode_data
from fleet.backend import Backend, load_keyring

from agent.config.schema import (
    AgentConfig,
    BatchConfig,
    ControlConfig,
    EventsConfig,
    KeysConfig,
    PrivacyConfig,
    RingConfig,
    SamplingConfig,
    SpoolConfig,
    StateConfig,
    UplinkConfig,
    VehicleConfig,
    load_config,
)
from agent.errors import AgentError
from agent.output.spool import SPOOL_FILE, Spool
from agent.runtime.daemon import build_agent
from agent.runtime.pipeline import load_plan
from agent.sampling.curve import Curve
from agent.sampling.frame_time import FRAME_TIME_MODES
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sources.canbus import CanBusConfig
from agent.sources.player import Player
from agent.sources.registry import is_value_source
from agent.sources.replay import ReplayConfig
from agent.wire.keys import generate_key_pair

log = logging.getLogger(__name__)

REPLAY_TIMEOUT = 3600.0
# (signal key, tick in ms) → a value, or (min, max, mean, count) for a stats sample
Samples = dict[tuple[str, int], Any]
# signal key → (time ms, physical value) in time order: samples of `change` and `bounded`
# signals, or the frames that carry them
Points = dict[str, list[tuple[int, Any]]]


@dataclass
class SignalReport:
    compared: int = 0
    mismatched: int = 0
    missing: int = 0
    extra: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.mismatched + self.missing + self.extra


@dataclass
class VerifyReport:
    signals: dict[str, SignalReport]
    frames: int
    batches: int
    speed: float

    @property
    def differences(self) -> int:
        return sum(report.differences for report in self.signals.values())

    def totals(self) -> dict[str, int]:
        return {key: sum(getattr(r, key) for r in self.signals.values())
                for key in ("compared", "mismatched", "missing", "extra")}


def verify_config(log_path: Path, *, config_path: Path | None, dbcs: Sequence[Path],
                  speed: float, workdir: Path) -> AgentConfig:
    """The config the agent runs under for `verify`: the user's sampling plan and windows,
    every CAN source replaying its channel of `log_path`, no broker, no privacy transform
    (what is verified is decoding and sampling), state in `workdir`."""
    if config_path is not None:
        base = load_config(config_path)
        sources = []
        for source in base.sources:
            if is_value_source(source):
                log.warning("verify: source %s (%s) has no frames in a CAN log: left out",
                            source.name, source.type)
                continue
            channel = source.channel if isinstance(source, CanBusConfig | ReplayConfig) else ""
            sources.append(ReplayConfig(
                name=source.name, type="replay", dbc=tuple(dbcs) or source.dbc,
                strict=source.strict, stale_after=source.stale_after, dbc_origin=source.dbc_origin,
                path=log_path, speed=speed,
                loop=False, rebase=False, channel=channel))
        sampling, batch, ring = base.sampling, base.batch, base.ring
    else:
        if not dbcs:
            raise AgentError("verify needs --dbc (or a --config whose sources name DBCs)")
        sources = [ReplayConfig(name="can0", type="replay", dbc=tuple(dbcs), path=log_path,
                                speed=speed, loop=False, rebase=False)]
        sampling, batch, ring = SamplingConfig(), BatchConfig(), RingConfig()
    if not sources:
        raise AgentError("verify: the config has no CAN source to replay the log through")
    key = workdir / "vehicle.key"
    generate_key_pair(key)
    return AgentConfig(
        path=workdir / "verify.toml", vehicle=VehicleConfig(id="verify"),
        sources=tuple(sources), keys=KeysConfig(signing_key=key),
        state=StateConfig(directory=workdir / "state"), sampling=sampling, batch=batch,
        ring=dataclasses.replace(ring, memory_mb=max(ring.memory_mb, 64.0)),
        spool=SpoolConfig(max_mb=4096.0),
        # Nothing listens there: batches stay spooled, which is where verify reads them.
        uplink=UplinkConfig(host="127.0.0.1", port=9, tls=False),
        control=ControlConfig(socket=workdir / "control.sock", group=""),
        privacy=PrivacyConfig(), events=EventsConfig(enabled=False))


def run_agent(config: AgentConfig, timeout: float = REPLAY_TIMEOUT) -> list[bytes]:
    """Run the daemon until every replay has played its log; its sealed telemetry batches."""
    logging.getLogger("agent.output.uplink").setLevel(logging.CRITICAL)
    agent = build_agent(config)
    agent.start()
    deadline = time.monotonic() + timeout
    poll = threading.Event()  # never set: a wait that a signal can interrupt, unlike sleep
    while not (finished := agent.replay_finished()) and time.monotonic() < deadline:
        poll.wait(0.05)
    agent.stop()
    if not finished:
        raise AgentError(f"verify: the replay did not finish in {timeout:.0f} s")
    spool = Spool(config.state.directory / SPOOL_FILE, int(config.spool.max_mb * 2**20))
    try:
        batches = spool.next_batches(1 << 30)
    finally:
        spool.close()
    return [batch.envelope for batch in batches if batch.topic == "telemetry"]


def agent_samples(envelopes: Iterable[bytes], public_key: Path,
                  points: Points | None = None) -> tuple[Samples, int]:
    """What the batches carry, decoded as the backend decodes them; every sample also goes to
    `points` (when given) in order, where samples of one ms do not replace each other."""
    backend = Backend(*load_keyring([f"verify={public_key}"]))
    samples: Samples = {}
    count = 0
    for envelope in envelopes:
        receipt = backend.receive(envelope)
        if not receipt.ok or receipt.body is None:
            raise AgentError(f"verify: the agent sealed a batch its backend refuses: "
                             f"{receipt.error}")
        rows = backend.rows(receipt.body)
        if rows is None:
            raise AgentError("verify: a batch came before its signal dictionary")
        count += 1
        for row in rows:
            key = (row["signal"], round(row["time"] * 1000))
            samples[key] = (row["value"] if "value" in row
                            else (row["min"], row["max"], row["mean"], row["count"]))
            if points is not None and "value" in row:
                points.setdefault(key[0], []).append((key[1], row["value"]))
    if points is not None:
        for series in points.values():
            series.sort(key=lambda point: point[0])  # stable: a step keeps its order
    return samples, count


# The oracle

def frames_of(log_path: Path, channel: str) -> list[can.Message]:
    """The frames a replay of `channel` plays (every frame without one), in log order."""
    frames: list[can.Message] = []
    Player(log_path, speed=0, loop=False, rebase=False, channel=channel).play(
        frames.append, threading.Event())
    return frames


def cantools_decode(message: Message, data: bytes) -> dict[str, Any]:
    """Raw values as cantools decodes them; signal by signal (same codec, the page rule of
    multiplexed messages applied) where cantools refuses the message as a whole."""
    try:
        return message.decode(data, decode_choices=False, scaling=False,
                              allow_truncated=True, allow_excess=True)
    except Exception:  # an overlapping layout cantools cannot unpack at once
        pass
    decoded: dict[str, Any] = {}
    for signal in message.signals:
        try:
            formats = create_encode_decode_formats([signal], message.length)
            decoded.update(decode_data(data, message.length, [signal], formats, False, False,
                                       True, True))
        except Exception:  # a signal its message cannot hold
            continue
    return {name: value for name, value in decoded.items()
            if (signal := message.get_signal_by_name(name)).multiplexer_signal is None
            or decoded.get(signal.multiplexer_signal) in (signal.multiplexer_ids or ())}


def expected_samples(sources: Mapping[str, list[can.Message]],
                     databases: Mapping[str, Database], plan: SamplingPlan) -> Samples:
    """What the sampling rules give for these frames (see the module's docstring)."""
    stamps = [frames[i].timestamp for frames in sources.values() for i in (0, -1) if frames]
    if not stamps:
        return {}
    first_ms, last_ms = int(min(stamps) * 1000), int(max(stamps) * 1000)
    expected: Samples = {}
    for name, frames in sources.items():
        signals = plan.for_source(name)
        if signals:
            expected.update(_source_samples(frames, databases[name], signals,
                                            plan.stale_after_ms / 1000, first_ms, last_ms))
    return expected


def _source_samples(frames: Sequence[can.Message], database: Database,
                    signals: Sequence[PlannedSignal], stale_after: float, first_ms: int,
                    last_ms: int) -> Samples:
    by_message: dict[int, list[PlannedSignal]] = defaultdict(list)
    for signal in signals:
        by_message[signal.frame_id].append(signal)
    expected: Samples = {}
    for frame_id, planned in by_message.items():
        message = database.get_message_by_frame_id(frame_id)
        # (timestamp, decoded raw values) of every frame of this message the agent can use
        decoded = [(frame.timestamp, cantools_decode(message, bytes(frame.data)))
                   for frame in frames
                   if frame.arbitration_id == frame_id and not frame.is_error_frame
                   and not frame.is_remote_frame
                   and frame.is_extended_id == message.is_extended_frame]
        for signal in planned:
            definition = message.get_signal_by_name(signal.signal)
            carrying = [(stamp, values) for stamp, values in decoded
                        if _selects(message, definition, values)]
            if signal.mode == "last":
                expected.update(_last(signal, definition, carrying, stale_after, first_ms,
                                      last_ms))
            elif signal.mode == "stats":
                expected.update(_stats(signal, definition, carrying, first_ms, last_ms))
    return expected


def frame_values(sources: Mapping[str, list[can.Message]], databases: Mapping[str, Database],
                 plan: SamplingPlan) -> Points:
    """(time ms, raw value) of every frame that carries each `change` or `bounded` signal."""
    values: Points = {}
    for name, frames in sources.items():
        for signal in plan.for_source(name):
            if signal.mode not in FRAME_TIME_MODES:
                continue
            message = databases[name].get_message_by_frame_id(signal.frame_id)
            definition = message.get_signal_by_name(signal.signal)
            series = values.setdefault(signal.key, [])
            for frame in frames:
                if frame.arbitration_id != signal.frame_id or frame.is_error_frame \
                        or frame.is_remote_frame \
                        or frame.is_extended_id != message.is_extended_frame:
                    continue
                decoded = cantools_decode(message, bytes(frame.data))
                raw = decoded.get(signal.signal)
                if raw is not None and _selects(message, definition, decoded):
                    series.append((int(frame.timestamp * 1000), raw))
    return values


def expected_changes(signal: PlannedSignal, frames: Sequence[tuple[int, Any]],
                     window_ms: int) -> list[tuple[int, Any]]:
    """The `change` rule over (time ms, raw value) frames, written out again from its
    statement: the first frame; a frame more than the deadband from the last sample; a frame
    a heartbeat or more after the last sample; a frame older than the one before is ignored;
    before the first frame of a later window, the value of the previous frame stamped at the
    window start t0, if that frame came at most a heartbeat before t0."""
    samples: list[tuple[int, Any]] = []
    previous_ms = None
    previous_raw: Any = None
    for time_ms, raw in frames:
        if previous_ms is not None and time_ms < previous_ms:
            continue
        start = time_ms - time_ms % window_ms
        if previous_ms is not None and 0 < start - previous_ms <= signal.heartbeat_ms:
            samples.append((start, previous_raw))
        previous_ms, previous_raw = time_ms, raw
        if samples:
            last_ms, last = samples[-1]
            both_nan = _same(last, raw) and raw != raw
            differs = not (raw == last or both_nan) and (
                raw != raw or last != last or not signal.deadband
                or not abs(raw - last) * abs(signal.scale) <= signal.deadband)
            if not differs and time_ms - last_ms < signal.heartbeat_ms:
                continue
        samples.append((time_ms, raw))
    return samples


def check_frame_time(plan: SamplingPlan, databases: Mapping[str, Database], frames: Points,
                     got: Points, reports: dict[str, SignalReport], window_ms: int) -> None:
    """Hold the agent's `change` and `bounded` samples against the frames (module docstring)."""
    for signal in plan.signals:
        if signal.mode not in FRAME_TIME_MODES:
            continue
        definition = databases[signal.source].get_message_by_frame_id(
            signal.frame_id).get_signal_by_name(signal.signal)
        report = reports.setdefault(signal.key, SignalReport())
        physical = [(t, definition.conversion.raw_to_scaled(raw, False))
                    for t, raw in frames.get(signal.key, [])]
        points = got.get(signal.key, [])
        if signal.mode == "change":
            expected = Counter((t, _canonical(definition.conversion.raw_to_scaled(raw, False)))
                               for t, raw in expected_changes(
                                   signal, frames.get(signal.key, []), window_ms))
            agent = Counter((t, _canonical(value)) for t, value in points)
            report.compared += sum((expected & agent).values())
            for (t, value), n in (expected - agent).items():
                report.missing += n
                _example(report, "missing", (signal.key, t), value, None)
            for (t, value), n in (agent - expected).items():
                report.extra += n
                _example(report, "extra", (signal.key, t), None, value)
            continue
        curve = Curve([t for t, _ in points], [value for _, value in points])
        for t, value in physical:
            distance = curve.distance(t, value)
            if distance is None:
                report.missing += 1
                _example(report, "missing", (signal.key, t), value, None)
            elif distance > signal.epsilon * (1 + 1e-9) + 1e-12 * max(1.0, abs(value)):
                report.mismatched += 1
                _example(report, "mismatched", (signal.key, t), value,
                         f"{distance:g} from the lines, epsilon {signal.epsilon:g}")
            else:
                report.compared += 1
        seen = {(t, _canonical(value)) for t, value in physical}
        held = _held_at_window_bounds(physical, [t for t, _ in points], window_ms)
        for t, value in points:
            if (t, _canonical(value)) not in seen | held:
                report.extra += 1
                _example(report, "extra", (signal.key, t), None, value)


def _held_at_window_bounds(frames: Sequence[tuple[int, Any]], times: Sequence[int],
                           window_ms: int) -> set[tuple[int, float | str]]:
    """The points at window bounds that hold a frame's value: (t0, the last frame before t0)
    at a window start (a frame stamped t0 comes after it, as a point of its own), and
    (t1 - 1, the last frame at or before it) at a window's last ms."""
    frame_times = [t for t, _ in frames]
    held = set()
    for t in times:
        if t % window_ms == 0:
            at = bisect.bisect_left(frame_times, t)
        elif t % window_ms == window_ms - 1:
            at = bisect.bisect_right(frame_times, t)
        else:
            continue
        if at:
            held.add((t, _canonical(frames[at - 1][1])))
    return held


def _selects(message: Message, signal: Any, values: Mapping[str, Any]) -> bool:
    """Whether a frame is one the signal is read from: any frame of its message, or for a
    signal on a multiplexer page, a frame of that page."""
    if signal.multiplexer_signal is None:
        return True
    top = next(s for s in message.signals if s.is_multiplexer)
    return values.get(top.name) in (signal.multiplexer_ids or ()) \
        if signal.multiplexer_signal == top.name else signal.name in values


def _ticks(period: int, first_ms: int, last_ms: int) -> range:
    return range(-(-first_ms // period) * period, last_ms + 1, period)


def _last(signal: PlannedSignal, definition: Any, carrying: Sequence[tuple[float, Any]],
          stale_after: float, first_ms: int, last_ms: int) -> Iterator[tuple[tuple[str, int],
                                                                            Any]]:
    position = 0
    newest = None
    for tick in _ticks(signal.period_ms, first_ms, last_ms):
        while position < len(carrying) and carrying[position][0] * 1000 < tick:
            newest = carrying[position]
            position += 1
        if newest is None or tick / 1000 - newest[0] > stale_after:
            continue
        raw = newest[1].get(signal.signal)
        if raw is not None:
            yield (signal.key, tick), definition.conversion.raw_to_scaled(raw, False)


def _stats(signal: PlannedSignal, definition: Any, carrying: Sequence[tuple[float, Any]],
           first_ms: int, last_ms: int) -> Iterator[tuple[tuple[str, int], Any]]:
    period = signal.period_ms
    groups: dict[int, list[Any]] = defaultdict(list)
    for stamp, values in carrying:
        raw = values.get(signal.signal)
        if raw is not None:
            groups[int(stamp * 1000) // period * period].append(raw)
    for label, raws in groups.items():
        scaled = sorted(definition.conversion.raw_to_scaled(v, False) for v in (min(raws),
                                                                             max(raws)))
        mean = definition.conversion.raw_to_scaled(sum(raws) / len(raws), False)
        yield (signal.key, label), (scaled[0], scaled[1], mean, len(raws))


def compare(expected: Samples, got: Samples, plan: SamplingPlan) -> dict[str, SignalReport]:
    reports = {signal.key: SignalReport() for signal in plan.signals}
    for key in expected.keys() | got.keys():
        report = reports.setdefault(key[0], SignalReport())
        if key not in got:
            report.missing += 1
            _example(report, "missing", key, expected[key], None)
        elif key not in expected:
            report.extra += 1
            _example(report, "extra", key, None, got[key])
        else:
            report.compared += 1
            if not _equal(expected[key], got[key]):
                report.mismatched += 1
                _example(report, "mismatched", key, expected[key], got[key])
    return reports


def _equal(expected: Any, got: Any) -> bool:
    if isinstance(expected, tuple):
        low, high, mean, count = expected
        return (_same(low, got[0]) and _same(high, got[1]) and count == got[3]
                and (got[2] is not None and math.isclose(mean, got[2], rel_tol=1e-9,
                                                         abs_tol=1e-12)))
    return _same(expected, got)


def _same(a: Any, b: Any) -> bool:
    """Equal values; NaN equals NaN (a float signal may carry one, and the wire keeps it)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _canonical(value: Any) -> float | str:
    """A value as `_same` compares it, hashable: NaN equals NaN, -0.0 equals 0, 5 equals 5.0."""
    return "nan" if value != value else float(value) + 0.0


def _example(report: SignalReport, kind: str, key: tuple[str, int], expected: Any,
             got: Any) -> None:
    if len(report.examples) < 3:
        report.examples.append({"kind": kind, "time_ms": key[1], "cantools": repr(expected),
                                "agent": repr(got)})


def verify(log_path: Path, *, config_path: Path | None = None, dbcs: Sequence[Path] = (),
           speed: float = 0.0) -> VerifyReport:
    """Replay `log_path` through the agent and compare every sample with the oracle."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-verify-") as folder:
        workdir = Path(folder)
        config = verify_config(log_path, config_path=config_path, dbcs=dbcs, speed=speed,
                               workdir=workdir)
        loaded, _, plan = load_plan(config)
        envelopes = run_agent(config)
        points: Points = {}
        got, batches = agent_samples(envelopes, workdir / "vehicle.pub", points)
    frames = {source.name: frames_of(log_path, source.channel) for source in config.sources}
    databases = {name: loaded[name].database for name in loaded}
    expected = expected_samples(frames, databases, plan)
    frame_time = {key for key, signal in ((s.key, s) for s in plan.signals)
                  if signal.mode in FRAME_TIME_MODES}
    reports = compare({k: v for k, v in expected.items() if k[0] not in frame_time},
                      {k: v for k, v in got.items() if k[0] not in frame_time}, plan)
    check_frame_time(plan, databases, frame_values(frames, databases, plan), points, reports,
                     round(config.batch.window * 1000))
    return VerifyReport(signals=reports,
                        frames=sum(len(f) for f in frames.values()), batches=batches,
                        speed=speed)
