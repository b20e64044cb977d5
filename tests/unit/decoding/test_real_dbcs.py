"""Production DBCs: every .dbc file of the `opendbc` package (0.3.1; tools/_venv.sh installs it
with --no-deps, only its DBC files are used) loads through agent.decoding.dbc as
`cantools --no-strict` reads it, and what cantools' strict mode refuses in it is exactly what
the warnings list.

cantools (45.1) itself cannot read these 21 files, even non-strict; for them our DbcError must
name the file and cantools' own reason (`CANTOOLS_REFUSES`):
- frame ids over 0x7FF without DBC's extended-id flag ("Standard frame id ... is more than 11
  bits"): chrysler_cusw, fca_giorgio, gm_global_a_lowspeed, toyota_2017_ref_pt, vw_meb,
  vw_mqbevo, generator/honda/_bosch_2018, honda_bosch_radarless, honda_crv_ex_2017_body;
- VAL_ tables for signals the file does not define ("unused VAL_ entries"): rivian_primary_actuator,
  tesla_can, generator/chrysler/chrysler_pacifica_2017_hybrid, generator/gm/gm_global_a_powertrain,
  generator/hyundai/hyundai_palisade_2023, generator/subaru/subaru_global_2017;
- syntax cantools' parser does not take ("Invalid syntax"): a factor written ".25"
  (generator/chrysler/_stellantis_common), names starting with a digit (mazda_2017,
  psa_aee2010_r3), comments without a signal name or a BO_ (generator/honda/_honda_common,
  hyundai_kia_generic), a CM_ line right before a BO_ (toyota_radar_dsu_tssp).
Eight partial files of opendbc's generator define no message at all, only an IMPORT of a common
file (`NO_MESSAGES`): our error says so.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections import defaultdict
from pathlib import Path

import cantools
import pytest

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import FrameStore
from agent.errors import DbcError
from agent.sampling.plan import build_plan
from agent.sources.health import SourceHealth

OPENDBC_VERSION = "0.3.1"

# File (relative to opendbc's dbc folder): the start of cantools' reason for refusing it.
CANTOOLS_REFUSES = {
    "chrysler_cusw.dbc": "Standard frame id 0x62cc033 is more than 11 bits",
    "fca_giorgio.dbc": "Standard frame id 0x1e36001e is more than 11 bits",
    "generator/chrysler/_stellantis_common.dbc": "Invalid syntax at line 16, column 33",
    "generator/chrysler/chrysler_pacifica_2017_hybrid.dbc": "unused VAL_ entries in DBC",
    "generator/gm/gm_global_a_powertrain.dbc": "unused VAL_ entries in DBC",
    "generator/honda/_bosch_2018.dbc": "Standard frame id 0x33da is more than 11 bits",
    "generator/honda/_honda_common.dbc": "Invalid syntax at line 207, column 13",
    "generator/honda/honda_bosch_radarless.dbc": "Standard frame id 0xf31aa54 is more than 11",
    "generator/honda/honda_crv_ex_2017_body.dbc": "Standard frame id 0x12f8bfa7 is more than 11",
    "generator/hyundai/hyundai_palisade_2023.dbc": "unused VAL_ entries in DBC",
    "generator/subaru/subaru_global_2017.dbc": "unused VAL_ entries in DBC",
    "gm_global_a_lowspeed.dbc": "Standard frame id 0x10630000 is more than 11 bits",
    "hyundai_kia_generic.dbc": "Invalid syntax at line 1656, column 5",
    "mazda_2017.dbc": "Invalid syntax at line 273, column 10",
    "psa_aee2010_r3.dbc": "Invalid syntax at line 165, column 6",
    "rivian_primary_actuator.dbc": "unused VAL_ entries in DBC",
    "tesla_can.dbc": "unused VAL_ entries in DBC",
    "toyota_2017_ref_pt.dbc": "Standard frame id 0x40140639 is more than 11 bits",
    "toyota_radar_dsu_tssp.dbc": "Invalid syntax at line 139, column 1",
    "vw_meb.dbc": "Standard frame id 0x12dd54a7 is more than 11 bits",
    "vw_mqbevo.dbc": "Standard frame id 0x12dd54a7 is more than 11 bits",
}
NO_MESSAGES = {f"generator/honda/{name}.dbc" for name in (
    "acura_ilx_2016_can", "acura_rdx_2020_can", "honda_civic_hatchback_ex_2017_can",
    "honda_common_canfd", "honda_crv_touring_2016_can", "honda_e_advance_2020_can",
    "honda_odyssey_exl_2018", "honda_odyssey_twn_2018")}

# cantools' strict-mode refusal, for the names it gives.
STRICT_REFUSAL = re.compile(r"The signals? (\w+)(?: and (\w+))? (?:are overlapping|does not fit)")


def opendbc_folder() -> Path:
    """opendbc's DBC folder, found without importing the package (its dependencies are not
    installed); a missing or other version fails the test: it is part of the test setup."""
    spec = importlib.util.find_spec("opendbc")
    try:
        version = importlib.metadata.version("opendbc")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if spec is None or spec.origin is None or version != OPENDBC_VERSION:
        pytest.fail(f"the opendbc package {OPENDBC_VERSION} (production DBCs) is not installed "
                    f"(found: {version}): run tools/_venv.sh, which installs it with --no-deps")
    return Path(spec.origin).parent / "dbc"


def test_every_opendbc_dbc_loads_with_the_warnings_strict_mode_would_refuse():
    root = opendbc_folder()
    files = sorted(root.rglob("*.dbc"))
    assert len(files) == 115, f"opendbc {OPENDBC_VERSION} has 115 .dbc files, found {len(files)}"
    problems = []
    refused_by_us = set()
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            loaded = load_dbc([path])
        except DbcError as exc:
            refused_by_us.add(name)
            problems += _check_refusal(name, path, str(exc))
            continue
        problems += _check_warnings(name, loaded)
    expected = set(CANTOOLS_REFUSES) | NO_MESSAGES
    assert refused_by_us == expected, (
        f"refused, unexpectedly: {sorted(refused_by_us - expected)}; "
        f"loaded, unexpectedly: {sorted(expected - refused_by_us)}")
    assert not problems, "\n".join(problems)


def _check_refusal(name: str, path: Path, error: str) -> list[str]:
    if name in NO_MESSAGES:
        expected = f"{path}: defines no CAN messages"
        return [] if error.startswith(expected) else [f"{name}: {error!r} is not {expected!r}"]
    try:
        cantools.database.load_file(path, strict=False)
    except cantools.database.UnsupportedDatabaseFormatError as exc:
        reason = str(exc.e_dbc)
    else:
        return [f"{name}: cantools reads it, but we refuse it: {error}"]
    problems = []
    if not error.startswith(f"{path}: cantools rejects this DBC: {reason}"):
        problems.append(f"{name}: our error {error!r} does not carry cantools' {reason!r}")
    if not reason.startswith(CANTOOLS_REFUSES.get(name, "\0")):
        problems.append(f"{name}: cantools now says {reason!r}, not "
                        f"{CANTOOLS_REFUSES.get(name)!r}: update CANTOOLS_REFUSES")
    return problems


def _check_warnings(name: str, loaded) -> list[str]:
    """Per message: cantools' strict check refuses it exactly when we warn about it, and for
    a problem we list too."""
    ours = defaultdict(set)
    for warning in loaded.warnings:
        ours[(warning.message, warning.frame_id)].add(frozenset(warning.signals))
    problems = []
    for message in loaded.database.messages:
        found = ours.pop((message.name, message.frame_id), set())
        try:
            message.refresh(strict=True)  # cantools' own strict check, on the parsed message
        except cantools.database.Error as exc:
            named = STRICT_REFUSAL.search(str(exc))
            signals = frozenset(filter(None, named.groups())) if named else None
            if signals not in found:
                problems.append(f"{name}: {message.name}: cantools' strict mode says {exc}; "
                                f"we warn about {sorted(map(sorted, found))}")
        else:
            if found:
                problems.append(f"{name}: {message.name}: cantools' strict mode accepts it; we "
                                f"warn about {sorted(map(sorted, found))}")
    if ours:
        problems.append(f"{name}: warnings about messages the database lacks: {sorted(ours)}")
    return problems


@pytest.mark.parametrize("file, message, overlaps", [
    ("generator/toyota/_toyota_2017.dbc", "PCS_HUD",
     {("PCS_TEMP", "SET_ME_X10"), ("PCS_DUST", "SET_ME_X10"), ("FRD_ADJ", "PCS_SENSITIVITY")}),
    ("vw_mqb.dbc", "PLA_01", {("PLA_Bremsmoment", "PLA_Bremsverzoegerung"),
                              ("PLA_Anf_Bremsverzoegerung", "PLA_Bremsmoment")}),
])
def test_the_overlaps_of_the_issue_are_found_and_strict_refuses_them(file, message, overlaps):
    path = opendbc_folder() / file
    loaded = load_dbc([path])
    assert {tuple(sorted(w.signals)) for w in loaded.warnings if w.message == message} == overlaps
    # every message is there to sample, as cantools --no-strict reads the file
    assert len(loaded.database.messages) == len(cantools.database.load_file(
        path, strict=False).messages)
    with pytest.raises(DbcError) as refused:
        load_dbc([path], strict=True)
    assert f"{path}: message " in str(refused.value)
    first = loaded.warnings[0]
    assert str(refused.value).startswith(f"strict = true refuses {first}")


@pytest.mark.parametrize("file", [
    "vw_mqb.dbc",  # overlaps
    "generator/toyota/_toyota_2017.dbc",  # overlaps, big-endian signals
    "gm_global_a_lowspeed_1818125.dbc",  # extended ids, 1,883 overlaps
    "generator/hyundai/hyundai_canfd.dbc",  # CAN FD, 64-byte frames, an overlap
    "tesla_model3_party.dbc",  # multiplexed messages
    "FORD_CADS_64.dbc",  # signals past their message's length
])
def test_a_plan_of_every_signal_builds_on_real_dbcs(file):
    database = load_dbc([opendbc_folder() / file]).database
    plan = build_plan(SamplingConfig(signals=(SignalRule(match="*"),)), {"car": database})
    expected = {f"car.{m.name}.{s.name}" for m in database.messages for s in m.signals
                if not s.is_multiplexer}
    assert {s.key for s in plan.signals} == expected
    store = FrameStore(database, plan.for_source("car"), SourceHealth())
    assert store.frame_ids == {m.frame_id for m in database.messages
                               if any(not s.is_multiplexer for s in m.signals)}
