"""Consent, classes, plan filtering, location controls, pseudonyms and the spool's part."""

from __future__ import annotations

import json
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main as edge_agent
from agent.config.schema import LocationConfig, PrivacyClassRule, PrivacyConfig, ZoneConfig
from agent.decoding.dbc import load_dbc
from agent.output.spool import PRIORITY_EVENT, Spool
from agent.privacy.consent import (
    Classifier,
    Consent,
    effective_consent,
    filter_plan,
    pseudonym,
    with_local_inputs,
    write_local_consent,
)
from agent.privacy.disclosure import redact_config, withholds_vehicle_id
from agent.privacy.location import LocationPolicy, distance_m
from agent.sampling.plan import PlannedSignal, SamplingPlan
from agent.sources.health import SourceHealth, counters_at_off
from agent.wire.body import BatchBody, decode_body, encode_body
from tests.helpers.agent_setup import REPO
from tests.helpers.dbc_fixtures import write_small_dbc


def planned(index: int, key: str) -> PlannedSignal:
    source, _, rest = key.partition(".")
    message, _, signal = rest.rpartition(".")
    return PlannedSignal(index, key, source, 1, message, signal, 1000, "last", False, 1, 0, "",
                         None)


KEYS = ["can0.BMS_Pack.SOC", "can0.BCM_Seats.SeatOccupied_FL",
        "can0.ESP_VehicleSpeed.VehicleSpeed", "gps.lat", "gps.lon", "gps.sats",
        "can0.NAV_Position.Latitude"]
PLAN = SamplingPlan(tuple(planned(i, k) for i, k in enumerate(KEYS)), 10_000)


def test_builtin_classes_and_config_rules_last_match_wins():
    classify = Classifier(PrivacyConfig(classes=(PrivacyClassRule("can0.BMS_*", "driving"),)))
    assert [classify(k) for k in KEYS] == ["driving", "occupant", "driving", "location",
                                           "location", "technical", "location"]
    plain = Classifier(PrivacyConfig(builtin_classes=False, default_class="occupant"))
    assert {plain(k) for k in KEYS} == {"occupant"}


@settings(max_examples=200, deadline=None)
@given(globs=st.lists(st.text("ab.*?[]!", min_size=1, max_size=6), max_size=8),
       keys=st.lists(st.text("ab.", max_size=6), min_size=1, max_size=10))
def test_the_rule_for_a_key_is_the_last_whose_glob_matches(globs, keys):
    """The classifier matches every rule in one expression: it must decide as fnmatchcase,
    rule by rule, with the last match winning (brackets, negation and stars included)."""
    rules = tuple(PrivacyClassRule(glob, "driving") for glob in globs)
    classify = Classifier(PrivacyConfig(builtin_classes=False, classes=rules))
    for key in [*keys, *KEYS]:
        expected = next((rule for rule in reversed(rules) if fnmatchcase(key, rule.match)), None)
        assert classify.rule_for(key) is expected, (key, globs)


def test_the_bundled_dbc_is_classified_as_rule_by_rule():
    from agent.privacy.consent import BUILTIN_RULES

    rules = (*BUILTIN_RULES, PrivacyClassRule("can0.BMS_*", "occupant"))
    classify = Classifier(PrivacyConfig(classes=rules[len(BUILTIN_RULES):]))
    database = load_dbc([REPO / "dbc" / "vehicle.dbc"]).tables
    keys = [f"can0.{m.name}.{s.name}" for m in database.messages for s in m.signals]
    for key in [*keys, *KEYS]:
        expected = next((rule for rule in reversed(rules) if fnmatchcase(key, rule.match)), None)
        assert classify.rule_for(key) is expected, key


@pytest.mark.parametrize(("level", "kept"), [
    ("off", []), ("vehicle-health", ["can0.BMS_Pack.SOC", "gps.sats"]), ("full", KEYS)])
def test_filter_plan_keeps_what_the_consent_allows_renumbered(level, kept):
    wire = filter_plan(PLAN, Consent(level, 1, "config"), Classifier(PrivacyConfig()))
    assert [s.key for s in wire.signals] == kept
    assert [s.index for s in wire.signals] == list(range(len(kept)))


def test_trip_summaries_only_keeps_positions_off_the_wire():
    wire = filter_plan(PLAN, Consent("full", 1, "config"), Classifier(PrivacyConfig()),
                       tracks=False)
    assert not {"gps.lat", "gps.lon", "can0.NAV_Position.Latitude"} & {s.key
                                                                       for s in wire.signals}


def test_local_inputs_follow_the_wire_prefix():
    wire = filter_plan(PLAN, Consent("vehicle-health", 1, "config"), Classifier(PrivacyConfig()))
    local = with_local_inputs(wire, [planned(9, "can0.ESP_VehicleSpeed.VehicleSpeed"),
                                     planned(3, "can0.BMS_Pack.SOC")])
    assert [(s.index, s.key) for s in local.signals] == [
        (0, "can0.BMS_Pack.SOC"), (1, "gps.sats"), (2, "can0.ESP_VehicleSpeed.VehicleSpeed")]


def test_the_newest_decision_wins_and_a_broken_file_fails_closed(tmp_path):
    config = PrivacyConfig(consent="full", consent_version=4)
    assert effective_consent(config, tmp_path) == Consent("full", 4, "config")
    decided = write_local_consent(tmp_path, "off", effective_consent(config, tmp_path))
    assert decided == Consent("off", 5, "local")
    assert effective_consent(config, tmp_path) == decided
    newer = PrivacyConfig(consent="vehicle-health", consent_version=6)
    assert effective_consent(newer, tmp_path).level == "vehicle-health"
    (tmp_path / "consent.json").write_text("{not json")
    assert effective_consent(newer, tmp_path).level == "off"
    (tmp_path / "consent.json").write_text(json.dumps({"level": "everything", "version": 9}))
    assert effective_consent(newer, tmp_path).level == "off"


def test_zones_suppress_and_precision_snaps():
    policy = LocationPolicy(LocationConfig(precision_m=1000), (
        ZoneConfig("home", center=(48.1, 11.5), radius_m=300),
        ZoneConfig("work", polygon=((48.2, 11.6), (48.2, 11.62), (48.21, 11.62),
                                    (48.21, 11.6))),
    ))
    assert policy.reveal(48.1015, 11.5) is None  # 167 m from home
    assert policy.reveal(48.205, 11.61) is None
    lat, lon = policy.reveal(48.15, 11.55)
    assert distance_m((lat, lon), (48.15, 11.55)) < 1000
    assert policy.reveal(48.1501, 11.5501) == (lat, lon)  # same cell
    assert policy.snap(lat, lon) == pytest.approx((lat, lon))


def test_pseudonym_rotates_and_hides_the_id():
    secret = bytes(32)
    names = {pseudonym(secret, "demo-0001", period) for period in range(5)}
    assert len(names) == 5 and not any("demo" in name for name in names)
    assert pseudonym(secret, "demo-0001", 1) == pseudonym(secret, "demo-0001", 1)
    assert pseudonym(b"x" * 32, "demo-0001", 1) != pseudonym(secret, "demo-0001", 1)


def test_spool_drops_what_was_sealed_under_a_wider_consent(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite", 1 << 20)
    spool.put("telemetry", b"b", 0, b"full", consent=2)
    spool.put("events", b"b", 0, b"event", priority=PRIORITY_EVENT, consent=2)
    spool.put("telemetry", b"b", 1, b"health", consent=1)
    assert spool.drop_above(1) == 2
    assert [b.envelope for b in spool.next_batches(10)] == [b"health"]
    assert spool.stats().bytes == len(b"health")


def test_consent_travels_in_the_batch_body():
    body = BatchBody("v", b"b" * 16, 0, 0, 1000, "ntp", 1, bytes(32), {}, b"\0" * 8, None, (),
                     privacy={"consent": "vehicle-health", "ver": 7})
    assert decode_body(encode_body(body)).privacy == {"consent": "vehicle-health", "ver": 7}


def test_a_point_outside_a_zone_whose_snapped_position_is_inside_is_withheld():
    grid = LocationPolicy(LocationConfig(precision_m=500), ())
    point = (48.1234, 11.5678)
    sent = grid.snap(*point)
    # A zone centre 402 m from the point, on the line from the point through its cell centre.
    scale = 402 / distance_m(point, sent)
    center = (point[0] + (sent[0] - point[0]) * scale, point[1] + (sent[1] - point[1]) * scale)
    policy = LocationPolicy(LocationConfig(precision_m=500),
                            (ZoneConfig("home", center=center, radius_m=400),))
    assert distance_m(center, point) > 400 and distance_m(center, sent) < 400
    assert policy.reveal(*point) is None


ZONED_CONFIG = """
[vehicle]
id = "demo-4711"   # the owner's car
# [[privacy.zones]]
# center = [48.555551, 11.555552]

[uplink]
password = "hunter2"

[privacy]
consent = "off"

[privacy.pseudonym]
enabled = true
key = "/etc/edge-agent/keys/pseudonym-demo-4711.key"

[[privacy.zones]]
name = "home"
center = [48.111111, 11.222222]
radius_m = 300

[[privacy.zones]]
name = "work"
polygon = [
    [48.333331, 11.444441],  # a comment with [brackets
    [48.333332, 11.444442],
    [48.333333, 11.444443],
]

[privacy.location]
precision_m = 500
"""


def test_a_redacted_config_keeps_its_shape_but_no_zone_key_or_secret():
    redacted = redact_config(ZONED_CONFIG)
    for secret in ("48.", "11.", "hunter2", "pseudonym-demo", '"home"', '"work"'):
        assert secret not in redacted.text
    parsed = tomllib.loads(redacted.text)
    assert len(parsed["privacy"]["zones"]) == 2
    assert parsed["privacy"]["location"]["precision_m"] == 500
    assert parsed["privacy"]["consent"] == "off"
    assert redacted.withheld[0] == "2 privacy zones (every value)"
    assert "[privacy.pseudonym] key" in redacted.withheld
    assert "[uplink] password" in redacted.withheld
    assert withholds_vehicle_id("off", False) and withholds_vehicle_id("full", True)
    assert not withholds_vehicle_id("vehicle-health", False)


def bundled_keys() -> list[str]:
    database = load_dbc([Path(__file__).resolve().parents[3] / "dbc" / "vehicle.dbc"]).database
    return [f"can0.{m.name}.{s.name}" for m in database.messages for s in m.signals]


def test_the_example_vehicle_is_classified_signal_by_signal_as_a_reviewer_would_sign():
    classify = Classifier(PrivacyConfig())
    keys = bundled_keys()
    assert len(keys) > 800 and classify.unclassified(keys) == []
    # What follows the driver or the car's motion is not technical, wherever it is measured.
    for key in ("IC_Display.DisplayedSpeed", "INV_Motor.MotorSpeed", "INV_Motor.MotorTorque",
                "VCU_Status.Gear", "VCU_Status.IgnitionState", "SUS_Accel.PitchAngle",
                "SUS_Accel.RollAngle", "SUS_Accel.BodyAccel_FL", "IC_DateTime.ClockHour",
                "BMS_Pack.PackCurrent", "VCU_Energy.TripEnergyUsed",
                "EPB_Status.ParkingBrakeState"):
        assert classify(f"can0.{key}") == "driving", key
    for key in ("IC_Warnings.DoorAjarWarning", "IC_Settings.Language",
                "CHG_Schedule.DepartureHour", "HVAC_Status.CabinTemp"):
        assert classify(f"can0.{key}") == "occupant", key
    # The component's condition stays technical, software versions of every ECU included.
    for key in ("BMS_Pack.SOC", "BMS_CellStats.CellVoltageDelta", "TPMS_Status.TirePressure_RL",
                "SUS_Height.SuspHeight_RL", "DIAG_EcuInfo.HVAC_SwMajor",
                "DIAG_EcuInfo.EPS_SwMajor", "VCU_Faults.VCU_FaultPedalPlausibility"):
        assert classify(f"can0.{key}") == "technical", key


def test_an_unclassified_signal_gets_the_most_protective_class_and_config_check_lists_it(
        tmp_path, capsys):
    classify = Classifier(PrivacyConfig())
    assert classify("can0.Engine.Temp") == "location"
    wire = filter_plan(SamplingPlan((planned(0, "can0.Engine.Temp"),
                                     planned(1, "can0.BMS_Pack.SOC")), 1000),
                       Consent("vehicle-health", 1, "config"), classify)
    assert [s.key for s in wire.signals] == ["can0.BMS_Pack.SOC"]

    write_small_dbc(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text("""
[vehicle]
id = "v1"
[[sources]]
name = "can0"
type = "socketcan"
channel = "can0"
dbc = ["small.dbc"]
[[sampling.signals]]
match = "can0.Engine.*"
[keys]
signing_key = "k.key"
[uplink]
tls = false
[[privacy.classes]]
match = "can0.Engine.Temp"
class = "technical"
""", encoding="utf-8")
    assert edge_agent(["config", "check", "--json", str(config)]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["unclassified"] == ["can0.Engine.Speed", "can0.Engine.Gear"]
    assert edge_agent(["config", "check", str(config)]) == 0
    err = capsys.readouterr().err
    assert "unclassified: can0.Engine.Gear" in err and "Engine.Temp" not in err


def test_at_consent_off_the_counters_say_nothing_of_use():
    counters = {**{f"can0.{k}": v for k, v in SourceHealth(frames=5000, failures=1,
                                                          reconnects=2).counters().items()},
                "gps.fix_mode": 3, "uplink.published": 40, "uplink.refused": 1,
                "spool.depth": 3, "spool.evicted": 0, "ring.lost": 0}
    assert counters_at_off(counters) == {"can0.failures": 1, "uplink.refused": 1,
                                         "spool.evicted": 0, "ring.lost": 0}
