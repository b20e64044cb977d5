"""What detectors see (Readings) and what they report (Event)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    """A finding. `privacy_class` decides whether the consent lets it out at all; `positions`
    (name → (lat, lon)) pass through the location policy; `signals` names the signal keys
    whose values `data` reveals: the event is withheld unless the consent allows each."""

    type: str
    time_ms: int
    privacy_class: str
    data: Mapping[str, Any]
    positions: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    signals: tuple[str, ...] = ()


class Readings(Protocol):
    """The latest fresh physical value of each input signal at one sampling tick."""

    time_ms: int

    def value(self, key: str) -> float | None: ...

    def label(self, key: str) -> str | None: ...

    def position(self) -> tuple[float, float] | None: ...


class Detector(Protocol):
    name: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """Signal keys this detector reads (those missing from every source are left out)."""

    def step(self, now: Readings) -> list[Event]: ...
