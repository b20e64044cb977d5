"""The sampling plan: which signals to sample, how often and how, resolved against the DBCs.

Rules in config select signals by glob over `<source>.<Message>.<Signal>` (CAN sources, from
their DBC) or `<source>.<quantity>` (gpsd and serial sources, from their catalogue); the last
rule that matches a signal decides its period and mode, and `exclude = true` drops it. With no
rules at all every signal of every source is sampled at the default period. Multiplexer
selector signals are structure, not data, and are never sampled.

Modes `change` and `bounded` sample at frame time (docs/sampling.md). An enum (a value table)
or a flag (one bit) has no meaningful in-between: its deadband is always 0, and `bounded` on
it means `change` (a line between gear 2 and gear 4 would invent gear 3).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config.schema import SamplingConfig, SignalRule
from agent.errors import ConfigError
from agent.sources.catalogue import Catalogue

if TYPE_CHECKING:
    from cantools.database.can import Database

    from agent.decoding.tables import DbcTables

    # What a CAN source's signals are read from: the agent's own tables
    # (agent/decoding/tables.py) or a cantools database. The tables carry cantools' attribute
    # names, so both read alike, and planning needs no cantools.
    CanDatabase = DbcTables | Database


@dataclass(frozen=True)
class PlannedSignal:
    """One sampled signal. `index` is its position in the plan and in the wire dictionary.

    For a value source `frame_id` is 0, `message` is empty and `signal` is the quantity."""

    index: int
    key: str
    source: str
    frame_id: int
    message: str
    signal: str
    period_ms: int
    mode: str
    is_float: bool
    scale: int | float
    offset: int | float
    unit: str
    choices: Mapping[int, str] | None
    # A 64-bit unsigned signal: raw values above int64's range travel as their bit pattern.
    is_unsigned64: bool = False
    # An enum or a one-bit flag: sampled by change with no deadband, never interpolated.
    is_discrete: bool = False
    # `change`: the deadband, physical units; `bounded`: ε, physical units; both: the longest
    # time without a sample while frames come (docs/sampling.md).
    deadband: float = 0.0
    epsilon: float = 0.0
    heartbeat_ms: int = 0


@dataclass(frozen=True)
class SamplingPlan:
    signals: tuple[PlannedSignal, ...]
    stale_after_ms: int
    unmatched: tuple[str, ...] = ()  # the rules' globs that match no signal of any source

    def for_source(self, source: str) -> tuple[PlannedSignal, ...]:
        return tuple(s for s in self.signals if s.source == source)

    def frame_ids(self, source: str) -> frozenset[int]:
        return frozenset(s.frame_id for s in self.signals if s.source == source)

    @property
    def periods_ms(self) -> tuple[int, ...]:
        return tuple(sorted({s.period_ms for s in self.signals}))


def build_plan(config: SamplingConfig,
               databases: Mapping[str, CanDatabase | Catalogue]) -> SamplingPlan:
    """Resolve the rules against each source's database or catalogue, in source order."""
    rules = config.signals or (SignalRule(match="*"),)
    # Each glob compiled once, as fnmatchcase compiles it: called per key and rule, its own
    # overhead was a tenth of a `config check` of the bundled plan.
    matchers = [re.compile(fnmatch.translate(rule.match)).match for rule in rules]
    used = [False] * len(rules)
    signals: list[PlannedSignal] = []
    for source, database in databases.items():
        for candidate in source_signals(source, database):
            rule = _decisive_rule(candidate.key, rules, matchers, used)
            if rule is None or rule.exclude:
                continue
            period = rule.period if rule.period is not None else config.period
            mode = "change" if rule.mode == "bounded" and candidate.is_discrete else rule.mode
            signals.append(dataclasses.replace(
                candidate, index=len(signals), period_ms=_to_ms(period), mode=mode,
                deadband=0.0 if candidate.is_discrete else rule.deadband,
                epsilon=rule.epsilon or 0.0, heartbeat_ms=_to_ms(rule.heartbeat)))
    unmatched = tuple(rule.match for rule, was_used in zip(rules, used, strict=True)
                      if not was_used)
    if not signals:
        raise ConfigError("the sampling plan selects no signal: check [[sampling.signals]] "
                          "match patterns against `edge-agent decode` output")
    if len(signals) > 65535:
        raise ConfigError(f"the plan selects {len(signals)} signals; the limit is 65535")
    return SamplingPlan(signals=tuple(signals), stale_after_ms=_to_ms(config.stale_after),
                        unmatched=unmatched)


def source_signals(source: str, database: CanDatabase | Catalogue) -> Iterator[PlannedSignal]:
    """Every signal `source` offers (unplanned: index, period and mode not yet set)."""
    if isinstance(database, tuple):  # a Catalogue
        return _catalogue_signals(source, database)
    return _dbc_signals(source, database)


def _dbc_signals(source: str, database: CanDatabase) -> Iterator[PlannedSignal]:
    for message in sorted(database.messages, key=lambda m: m.name):
        for signal in message.signals:
            if signal.is_multiplexer:
                continue
            yield PlannedSignal(
                index=0, key=f"{source}.{message.name}.{signal.name}", source=source,
                frame_id=message.frame_id, message=message.name, signal=signal.name,
                period_ms=0, mode="last", is_float=signal.is_float, scale=signal.scale,
                offset=signal.offset, unit=signal.unit or "",
                choices=({int(v): str(n) for v, n in signal.choices.items()}
                         if signal.choices else None),
                is_unsigned64=not signal.is_float and not signal.is_signed
                and signal.length >= 64,
                is_discrete=bool(signal.choices) or signal.length == 1)


def _catalogue_signals(source: str, catalogue: Catalogue) -> Iterator[PlannedSignal]:
    for entry in catalogue:
        yield PlannedSignal(
            index=0, key=f"{source}.{entry.quantity}", source=source, frame_id=0, message="",
            signal=entry.quantity, period_ms=0, mode="last", is_float=entry.is_float,
            scale=entry.scale, offset=entry.offset, unit=entry.unit, choices=entry.choices,
            is_discrete=bool(entry.choices))


def _decisive_rule(key: str, rules: Sequence[SignalRule],
                   matchers: Sequence[Callable[[str], re.Match[str] | None]],
                   used: list[bool]) -> SignalRule | None:
    decisive = None
    for position, (rule, match) in enumerate(zip(rules, matchers, strict=True)):
        if match(key) is not None:
            used[position] = True
            decisive = rule
    return decisive


def _to_ms(seconds: float) -> int:
    milliseconds = round(seconds * 1000)
    if milliseconds <= 0:
        raise ConfigError(f"period {seconds} s is shorter than the 1 ms resolution")
    return milliseconds
