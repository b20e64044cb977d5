"""A synthetic minute of 800 signals at 1 Hz, and the real batching parts to seal it.

The signals are the first 800 (by plan order) of dbc/vehicle.dbc; each gets values that look
like a car's: signals with value tables are enums that change a few times an hour, signals
named like counters count (wrapping at their bit width), everything else is a slowly varying
analog quantity (a slow sine plus a little noise) quantised to the DBC's scale and range.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import cantools
from cantools.database.can import Signal

from agent.config.schema import SamplingConfig
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.sampling.plan import PlannedSignal, SamplingPlan, build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from devkit.bench.common import VEHICLE_DBC

SIGNALS = 800
SECONDS = 60
T0_MS = 1_780_000_020_000 // 60_000 * 60_000
COUNTER_WORDS = ("counter", "alive", "cnt", "seq")


@dataclass
class Minute:
    plan: SamplingPlan
    values: list[list[int | float]]  # [second][signal] raw values


def plan_800(database: cantools.database.can.Database | None = None) -> SamplingPlan:
    database = database or cantools.database.load_file(str(VEHICLE_DBC))
    plan = build_plan(SamplingConfig(), {"can0": database})
    return SamplingPlan(signals=plan.signals[:SIGNALS], stale_after_ms=plan.stale_after_ms)


def minutes(count: int = 2, seed: int = 1) -> list[Minute]:
    """`count` consecutive minutes of the same 800 signals."""
    database = cantools.database.load_file(str(VEHICLE_DBC))
    plan = plan_800(database)
    rng = random.Random(seed)
    generators = [_generator(database.get_message_by_frame_id(s.frame_id)
                             .get_signal_by_name(s.signal), s, rng) for s in plan.signals]
    values = [[generate(second) for generate in generators]
              for second in range(SECONDS * count)]
    return [Minute(plan, values[n * SECONDS:(n + 1) * SECONDS]) for n in range(count)]


def _generator(signal: Signal, planned: PlannedSignal, rng: random.Random):  # noqa: ANN202
    low_raw = -(1 << (signal.length - 1)) if signal.is_signed else 0
    high_raw = (1 << (signal.length - 1)) - 1 if signal.is_signed else (1 << signal.length) - 1
    if signal.is_float:
        base, swing, period = rng.uniform(-50, 50), rng.uniform(0.5, 5), rng.uniform(120, 900)
        return lambda t: base + swing * math.sin(2 * math.pi * t / period)
    if signal.choices:
        options = sorted(int(v) for v in signal.choices)
        state = {"value": rng.choice(options)}

        def enum(t: int) -> int:
            if rng.random() < 1 / 1200:  # a few changes an hour
                state["value"] = rng.choice(options)
            return state["value"]

        return enum
    if any(word in signal.name.lower() for word in COUNTER_WORDS):
        start = rng.randrange(high_raw + 1) if high_raw > 0 else 0
        return lambda t: (start + t) % (high_raw + 1)
    scale = signal.scale or 1
    low = signal.minimum if signal.minimum is not None else low_raw * scale + signal.offset
    high = signal.maximum if signal.maximum is not None else high_raw * scale + signal.offset
    span = max(high - low, scale)
    middle = low + span * rng.uniform(0.3, 0.7)
    swing, period = span * rng.uniform(0.001, 0.02), rng.uniform(60, 1800)
    phase, noise = rng.uniform(0, 2 * math.pi), abs(scale) * rng.choice((0, 0, 0.5, 1))

    def analog(t: int) -> int:
        physical = middle + swing * math.sin(2 * math.pi * t / period + phase)
        physical += rng.gauss(0, noise) if noise else 0.0
        raw = round((physical - signal.offset) / scale)
        return min(max(raw, low_raw), high_raw)

    return analog


def fill(ring: Ring, data: Minute, t0_ms: int = T0_MS) -> None:
    append = ring.append
    for second, row in enumerate(data.values):
        at = t0_ms + second * 1000
        for index, value in enumerate(row):
            append(at, index, Field.VALUE, value)


def batcher(data: Minute, ring: Ring, signer: Signer) -> Batcher:
    identity = BatchIdentity(vehicle="bench-0001", boot=bytes(16), config_version=1,
                             dbc_digest=bytes(32), clock=lambda: "gnss")
    return Batcher(data.plan, ring, identity, signer, lambda: {"can0.frames": 123456})


def signer() -> tuple[Signer, object]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return Signer(key, CONTENT_TYPE), key.public_key()


def ring_for(data: Minute) -> Ring:
    return Ring(SIGNALS * SECONDS * 4, frozenset(s.index for s in data.plan.signals
                                                 if s.is_float))
