"""Figure `modes`: bytes on the wire for the sampling modes `change` and `bounded` against
`last` at 1 Hz, on the bundled drive (docs/sampling.md, method in docs/performance.md).

The drive is replayed through the real FrameStore → Sampler (+ FrameTimeSampler) → Ring →
Batcher path with 60 s windows, once per sampling profile, and the signed envelopes of every
batch are summed (dictionary included, as it travels in the first batch of each run):

- `last` 1 Hz: every signal's newest value each second (the baseline); `last` 10 Hz for scale
  (still not every change: most messages of the drive come at 10 to 100 Hz);
- `change`: every signal, deadband 0, heartbeat 60 s: no change lost, at its frame time;
- `bounded` (LSB): every non-discrete signal within ε = 1 raw step (its DBC factor), heartbeat
  60 s; enums and flags `change`;
- `bounded` (1 %): as above with ε = 1 % of the signal's DBC range.

The last pair measures what `change` is for: only the enums and flags, `last` at 1 Hz against
`change` (deadband 0, heartbeat 60 s).

The headline is the recommended mixed profile, each mode on the signals it is meant for (#23):
`change` for the enums and flags, `bounded` (ε = 1 % of the DBC range) for the slowly moving
analog values (temperatures, SOC, SOH, cell voltages: `SLOW`), `last` at 1 Hz for the rest;
against `last` at 1 Hz for every signal.

Every profile leaves out the rolling counters and checksums (`*_Counter`, `*_Checksum`): they
change on every frame by design, and are transport integrity, not data. Each profile is
measured twice: every signal, and then only the signals of each class that suits the mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import FrameStore
from agent.output.batch import Batcher
from agent.sampling.frame_time import FrameTimeSampler
from agent.sampling.plan import SamplingPlan, build_plan
from agent.sampling.ring import Ring
from agent.sampling.sampler import Sampler
from agent.sources.health import SourceHealth
from devkit.bench import synthetic
from devkit.bench.common import VEHICLE_DBC, Figure, drive_frames

HEARTBEAT = 60.0
# Slowly moving analog values, by name: what `bounded` is for (docs/sampling.md).
SLOW = re.compile(r"Temp|SOC|SOH|CellVoltage_\d")
INTEGRITY = (SignalRule("can0.*_Counter", exclude=True),
             SignalRule("can0.*_Checksum", exclude=True))


def run(quick: bool) -> Figure:
    database = load_dbc([VEHICLE_DBC]).database
    frames = list(drive_frames(40_000 if quick else None))
    profiles = {
        "last_1hz": (SignalRule("can0.*"), *INTEGRITY),
        "last_10hz": (SignalRule("can0.*", period=0.1), *INTEGRITY),
        "change": (SignalRule("can0.*", mode="change", heartbeat=HEARTBEAT), *INTEGRITY),
        "bounded_lsb": (*_bounded_rules(database, lambda s: abs(s.scale)), *INTEGRITY),
        "bounded_1pct": (*_bounded_rules(database, _one_percent), *INTEGRITY),
        # the signals `change` is for: enums and flags only, both ways
        "discrete_last_1hz": _discrete_rules(database, "last"),
        "discrete_change": _discrete_rules(database, "change"),
        "mixed": _mixed_rules(database),
    }
    results = {name: _replay(database, rules, frames) for name, rules in profiles.items()}
    base = results["last_1hz"]
    seconds = frames[-1].timestamp - frames[0].timestamp
    details: dict[str, float | int | str] = {"drive_seconds": round(seconds, 1),
                                             "frames": len(frames),
                                             "signals": int(base["signals"])}
    for name, result in results.items():
        details[f"{name}_bytes"] = int(result["bytes"])
        details[f"{name}_samples"] = int(result["samples"])
        details[f"{name}_bytes_per_hour"] = int(result["bytes"] / seconds * 3600)
        against = results["discrete_last_1hz"] if name == "discrete_change" else base
        if name not in ("last_1hz", "discrete_last_1hz"):
            details[f"{name}_saved_vs_last_pct"] = round(
                100 * (1 - result["bytes"] / against["bytes"]), 1)
    best = results["mixed"]["bytes"]
    return Figure(
        key="sampling_modes_bytes", title="Sampling modes: bytes vs last at 1 Hz (bundled drive)",
        unit="B", value=int(best), baseline=int(base["bytes"]), baseline_name="last at 1 Hz",
        ratio=round(base["bytes"] / best, 2),
        target="the mixed profile (change, bounded, last 1 Hz) sends fewer bytes than last "
               "at 1 Hz for every signal",
        met=best < base["bytes"], runs=1, details=details)


def _one_percent(signal: object) -> float:
    low, high = getattr(signal, "minimum", None), getattr(signal, "maximum", None)
    scale = abs(getattr(signal, "scale", 1) or 1)
    if low is None or high is None or high <= low:
        return scale
    return max(scale, (high - low) / 100)


def _discrete_rules(database: object, mode: str) -> tuple[SignalRule, ...]:
    """Only the enums and one-bit flags (as the plan tells them apart), in `mode`."""
    rules = [SignalRule("can0.*", exclude=True)]
    for message in database.messages:  # type: ignore[attr-defined]
        for signal in message.signals:
            if signal.choices or signal.length == 1:
                rules.append(SignalRule(f"can0.{message.name}.{signal.name}", mode=mode,
                                        heartbeat=HEARTBEAT))
    return (*rules, *INTEGRITY)


def _mixed_rules(database: object) -> tuple[SignalRule, ...]:
    """`last` 1 Hz for every signal, `bounded` (1 %) for the slow analog ones, `change` for
    the enums and flags."""
    rules = [SignalRule("can0.*")]
    for message in database.messages:  # type: ignore[attr-defined]
        for signal in message.signals:
            key = f"can0.{message.name}.{signal.name}"
            if signal.choices or signal.length == 1:
                rules.append(SignalRule(key, mode="change", heartbeat=HEARTBEAT))
            elif SLOW.search(signal.name):
                rules.append(SignalRule(key, mode="bounded", epsilon=_one_percent(signal),
                                        heartbeat=HEARTBEAT))
    return (*rules, *INTEGRITY)


def _bounded_rules(database: object, epsilon: object) -> tuple[SignalRule, ...]:
    """`change` for everything, then one `bounded` rule per signal with its own ε (the plan
    turns enums and flags back to `change`)."""
    rules = [SignalRule("can0.*", mode="change", heartbeat=HEARTBEAT)]
    for message in database.messages:  # type: ignore[attr-defined]
        for signal in message.signals:
            rules.append(SignalRule(f"can0.{message.name}.{signal.name}", mode="bounded",
                                    epsilon=float(epsilon(signal)),  # type: ignore[operator]
                                    heartbeat=HEARTBEAT))
    return tuple(rules)


def _replay(database: object, rules: Sequence[SignalRule], frames: list) -> dict[str, float]:  # type: ignore[type-arg]
    plan: SamplingPlan = build_plan(SamplingConfig(signals=tuple(rules)),
                                    {"can0": database})  # type: ignore[dict-item]
    ring = Ring.for_memory(64, frozenset(s.index for s in plan.signals if s.is_float))
    signer, _ = synthetic.signer()
    batcher: Batcher = synthetic.batcher(synthetic.Minute(plan, []), ring, signer)
    frame_time = FrameTimeSampler(plan, ring)
    store = FrameStore(database, plan.for_source("can0"), SourceHealth(),  # type: ignore[arg-type]
                       frame_time)
    total = [0, 0]

    def on_window(t0_ms: int, t1_ms: int) -> None:
        frame_time.flush(t1_ms if t1_ms % 60_000 == 0 else None)
        sealed = batcher.seal(t0_ms, t1_ms)
        total[0] += len(sealed.envelope)
        total[1] += sealed.samples

    sampler = Sampler(plan, ring, {"can0": store}, 60_000, on_window)
    for frame in frames:
        sampler.advance(frame.timestamp)
        store.accept(frame)
    sampler.finish()
    return {"bytes": total[0], "samples": total[1], "signals": len(plan.signals)}
