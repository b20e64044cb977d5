"""Triggers from the config: a condition on one signal (`above`, `below`, or `equals` a value
label), or an expression (`when`, agent/events/expression.py), that, held for `hold` seconds,
captures the ring's look-back (`lookback` seconds before) and the `post` seconds after, every
sample of the `capture` signals at the rate they were sampled, sent as one event. A Latch
keeps a flapping condition from firing more than once per `min_interval`, and it re-arms only
after the condition has cleared.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from agent.config.schema import TriggerConfig
from agent.events.expression import signals_of
from agent.events.expression_eval import Evaluator
from agent.events.latch import Latch
from agent.events.model import Event, Readings


class Recorder(Protocol):
    def capture(self, keys: Sequence[str], from_ms: int,
                to_ms: int) -> Mapping[str, list[tuple[int, float]]]: ...


class TriggerDetector:
    def __init__(self, config: TriggerConfig, available: Sequence[str],
                 recorder: Recorder) -> None:
        self.name = f"trigger:{config.name}"
        self._config = config
        self._recorder = recorder
        patterns = config.capture or (config.signal,)
        self._captured = tuple(key for key in available
                               if any(fnmatch.fnmatchcase(key, p) for p in patterns))
        self._latch = Latch(config.hold, config.min_interval)
        self._pending: list[int] = []

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self._config.signal,)

    def _condition(self, now: Readings) -> bool | None:
        config = self._config
        if config.equals is not None:
            label = now.label(config.signal)
            return None if label is None else label == config.equals
        value = now.value(config.signal)
        if value is None:
            return None
        return ((config.above is None or value > config.above)
                and (config.below is None or value < config.below))

    def step(self, now: Readings) -> list[Event]:
        if self._latch.update(now.time_ms, self._condition(now)):
            self._pending.append(now.time_ms)
        return self._captures(now.time_ms)

    def _captures(self, now_ms: int) -> list[Event]:
        """The events of the firings whose post window has passed."""
        config = self._config
        events = []
        post_ms = round(config.post * 1000)
        while self._pending and now_ms >= self._pending[0] + post_ms:
            fired = self._pending.pop(0)
            samples = self._recorder.capture(
                self._captured, fired - round(config.lookback * 1000), fired + post_ms)
            events.append(Event("trigger", fired, "technical", {
                "name": config.name, **self._describe(), "lookback_s": config.lookback,
                "post_s": config.post,
                "samples": {key: [[t, v] for t, v in rows] for key, rows in samples.items()},
            }, signals=self.inputs))
        return events

    def _describe(self) -> dict[str, str]:
        return {"signal": self._config.signal}


class ExpressionTrigger(TriggerDetector):
    """A trigger whose condition is an expression, evaluated at every instant of the sampled
    stream (agent/events/expression_eval.py) rather than only at ticks: it fires at the
    instant the expression becomes true (through the same Latch: hold, min_interval)."""

    def __init__(self, config: TriggerConfig, available: Sequence[str], recorder: Recorder,
                 evaluator: Evaluator, node: object) -> None:
        super().__init__(config, available, recorder)
        self._evaluator = evaluator
        self._inputs = signals_of(node)  # type: ignore[arg-type]
        if not config.capture:
            self._captured = tuple(key for key in available if key in self._inputs)
        self.fired: list[int] = []  # every firing since start, for tests and diagnostics

    @property
    def inputs(self) -> tuple[str, ...]:
        return self._inputs

    def observe(self, time_ms: int, samples: Iterable[tuple[str, float]]) -> None:
        """The samples of the expression's signals stamped `time_ms`, in time order."""
        self._instant(time_ms, samples)

    def step(self, now: Readings) -> list[Event]:
        if self._evaluator.time_ms is None or now.time_ms > self._evaluator.time_ms:
            self._instant(now.time_ms, ())  # a tick is an instant too (`for`, windows)
        return self._captures(now.time_ms)

    def _instant(self, time_ms: int, samples: Iterable[tuple[str, float]]) -> None:
        now = self._evaluator.at(time_ms, samples)
        if self._latch.update(time_ms, now):
            self._pending.append(time_ms)
            self.fired.append(time_ms)
        after = self._evaluator.after()  # `changed` and `rising` hold only at their instant
        if after != now:
            self._latch.update(time_ms, after)

    def _describe(self) -> dict[str, str]:
        return {"when": self._config.when}
