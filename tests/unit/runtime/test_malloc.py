"""agent/runtime/malloc.py: the daemon applies the systemd unit's malloc settings itself when
it is started without them, and leaves alone any the environment sets."""

from __future__ import annotations

from pathlib import Path

from agent.runtime.malloc import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MALLOC_SETTINGS,
    apply_malloc_settings,
)

UNIT = Path(__file__).resolve().parents[3] / "systemd" / "edge-agent.service"


class FakeMallopt:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def __call__(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.result


def test_without_the_environment_the_agent_sets_both():
    mallopt = FakeMallopt()
    applied = apply_malloc_settings({}, mallopt)
    assert sorted(mallopt.calls) == sorted([(M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, 1048576),
                                            (M_TRIM_THRESHOLD, 8388608)])
    assert applied == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1048576,
                       "MALLOC_TRIM_THRESHOLD_": 8388608}


def test_a_setting_in_the_environment_wins():
    mallopt = FakeMallopt()
    applied = apply_malloc_settings({"MALLOC_MMAP_THRESHOLD_": "262144"}, mallopt)
    assert mallopt.calls == [(M_ARENA_MAX, 2), (M_TRIM_THRESHOLD, 8388608)]
    assert applied == {"MALLOC_ARENA_MAX": 2, "MALLOC_TRIM_THRESHOLD_": 8388608}


def test_a_refused_setting_is_not_reported_as_applied():
    assert apply_malloc_settings({}, FakeMallopt(result=0)) == {}


def test_the_agent_applies_what_the_unit_sets():
    unit = dict(line.removeprefix("Environment=").split("=", 1)
                for line in UNIT.read_text().splitlines() if line.startswith("Environment="))
    assert {name: str(value) for name, (_, value) in MALLOC_SETTINGS.items()} == {
        name: unit[name] for name in MALLOC_SETTINGS}
