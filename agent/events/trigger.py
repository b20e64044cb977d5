"""Triggers from the config: a condition on one signal (`above`, `below`, or `equals` a value
label) that, held for `hold` seconds, captures the ring's look-back (`lookback` seconds before)
and the `post` seconds after, every sample of the `capture` signals at the rate they were
sampled, sent as one event. A Latch keeps a flapping condition from firing more than once per
`min_interval`, and it re-arms only after the condition has cleared.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.config.schema import TriggerConfig
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
        config = self._config
        if self._latch.update(now.time_ms, self._condition(now)):
            self._pending.append(now.time_ms)
        events = []
        post_ms = round(config.post * 1000)
        while self._pending and now.time_ms >= self._pending[0] + post_ms:
            fired = self._pending.pop(0)
            samples = self._recorder.capture(
                self._captured, fired - round(config.lookback * 1000), fired + post_ms)
            events.append(Event("trigger", fired, "technical", {
                "name": config.name, "signal": config.signal, "lookback_s": config.lookback,
                "post_s": config.post,
                "samples": {key: [[t, v] for t, v in rows] for key, rows in samples.items()},
            }, signals=(config.signal,)))
        return events
