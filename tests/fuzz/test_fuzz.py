"""Every parser of outside input survives its fuzz target (tests/fuzz/targets.py) for a
bounded number of examples, and every target finds a bug planted where only inputs that got
past the parser's first checks (checksums, CRCs, signatures, the schema) arrive.

`tools/fuzz` runs the same targets for as long as asked; docs/fuzzing.md has a long run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.targets import (
    HANG_SECONDS,
    TARGETS,
    TARGETS_BY_NAME,
    Finding,
    Tally,
    Target,
    explore,
    main,
    memory_limit,
    time_limit,
)

MEMORY_MB = 1024  # beyond the test process's size: an unbounded allocation fails, not swaps


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.name)
def test_parser_survives_its_fuzz_target(target: Target, tmp_path: Path) -> None:
    with memory_limit(MEMORY_MB), target.start(tmp_path) as check:

        # No shrinking: a signed document shrinks for minutes, and the input that failed is
        # printed whole anyway (tools/fuzz reports the shortest of each kind).
        @settings(max_examples=target.examples, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.reuse, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(target.inputs)
        def survives(data: bytes) -> None:
            with time_limit(HANG_SECONDS):
                check(data)

        survives()


class PlantedBug(Exception):
    """Raised by a function of the parser replaced for the test: not one of its errors."""


def _planted(*args: object, **kwargs: object) -> None:
    raise PlantedBug("planted behind the parser's first checks")


def _planted_nan(*args: object, **kwargs: object) -> float:
    """The replay's player ends on any exception with an error it logs (agent/sources/
    replay.py), so its planted bug is a wrong value instead: a rebase offset that is NaN."""
    return math.nan


# For each target, a function of the parser that only inputs that got past its first checks
# reach (a TPV with a fix in range, a checksummed sentence with valid numbers, a frame of the
# log with a finite time, a known command, a verified and decompressed batch, an update for
# this vehicle that is newer and not expired, a config that passed every other check), what
# replaces it, the kind of failure that must come out, and the budget of inputs. The budgets
# leave a chance below 1e-7 of a miss: 10 to 45 % of each target's inputs get there
# (measured over 400 inputs each).
RAISES = "PlantedBug"
PLANTED = {
    "gpsd-json": ("agent.sources.gpsd_json._time", _planted, RAISES, 60),
    "nmea": ("agent.sources.sensor_protocols._tpms_measurements", _planted, RAISES, 50),
    "tpms-binary": ("agent.sources.sensor_protocols._tpms_measurements", _planted, RAISES, 60),
    "candump-log": ("agent.sources.player.Player._offset", _planted_nan, "not finite", 70),
    "asc-log": ("agent.sources.player.Player._offset", _planted_nan, "not finite", 70),
    "control-socket": ("agent.runtime.control.peer_of", _planted, RAISES, 150),
    "backend": ("agent.wire.body.decode_varints", _planted, RAISES, 150),
    "ota-update": ("agent.ota.update.config_of", _planted, RAISES, 60),
    "fetch-request": ("agent.events.fetch.FetchMemory.remember", _planted, RAISES, 250),
    "config-toml": ("agent.config.schema._check_privacy", _planted, RAISES, 150),
}


def test_every_target_has_a_planted_bug() -> None:
    assert set(PLANTED) == set(TARGETS_BY_NAME)


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_target_finds_a_bug_planted_behind_the_first_checks(name: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    where, replacement, kind_of_failure, examples = PLANTED[name]
    monkeypatch.setattr(where, replacement)
    with memory_limit(MEMORY_MB):
        tally = explore(TARGETS_BY_NAME[name], tmp_path, examples=examples)
    assert tally.tried == examples
    found = [kind for kind in tally.failures if kind_of_failure in kind]
    assert found, f"{name}: {examples} inputs never reached {where}: {tally.summary()}"


def test_a_hang_is_a_failure_with_its_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    def endless(*args: object) -> None:
        while True:
            pass

    monkeypatch.setattr("agent.sources.gpsd_json._time", endless)
    tally = explore(TARGETS_BY_NAME["gpsd-json"], tmp_path, examples=30, hang=0.05)
    hangs = [failure for kind, failure in tally.failures.items() if kind.startswith("Hang")]
    assert hangs and b'"TPV"' in hangs[0].first, tally.summary()


def test_a_finding_names_what_broke_and_where_it_was_raised() -> None:
    try:
        try:
            [].pop()
        except IndexError as exc:
            raise Finding("an exception escaped the player thread") from exc
    except Finding as finding:
        tally = Tally("x")
        tally.record(b"input", finding)
    (kind,) = tally.failures
    # Grouped by file (a library reaches one bug of ours from several lines); the first
    # failure keeps its line.
    assert kind == "an exception escaped the player thread: IndexError at tests/fuzz/test_fuzz.py"
    assert tally.failures[kind].raised_at.startswith("tests/fuzz/test_fuzz.py:")


def test_tools_fuzz_counts_inputs_and_failures_per_target(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    assert main(["--target", "tpms-binary", "--seconds", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (target,) = report["targets"]
    assert target["target"] == "tpms-binary" and target["inputs"] > 0
    assert target["failures"] == 0 and target["kinds"] == []

    monkeypatch.setattr("agent.sources.sensor_protocols._tpms_measurements", _planted)
    assert main(["--target", "tpms-binary", "--seconds", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "tpms-binary" in out and "PlantedBug at agent/sources/sensor_protocols.py:" in out
    assert "first:    b'" in out
