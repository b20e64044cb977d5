"""`edge-agent config check`: what a field tech runs before installing a config."""

from __future__ import annotations

import json
from pathlib import Path

from agent.cli import main
from tests.helpers.agent_setup import REPO
from tests.helpers.dbc_fixtures import write_small_dbc

BASE = """
[vehicle]
id = "v1"

[[sources]]
name = "can0"
type = "socketcan"
channel = "can0"
dbc = ["{dbc}"]

[keys]
signing_key = "k.key"

[uplink]
tls = false
"""


def write_config(directory: Path, extra: str) -> Path:
    path = directory / "agent.toml"
    path.write_text(BASE.format(dbc=write_small_dbc(directory)) + extra, encoding="utf-8")
    return path


def check(path: Path, capsys, *options: str) -> tuple[int, dict]:
    code = main(["config", "check", "--json", *options, str(path)])
    return code, json.loads(capsys.readouterr().out)


def test_a_trigger_on_an_unknown_signal_is_a_problem_with_the_closest_names(tmp_path, capsys):
    path = write_config(tmp_path, """
[events]
enabled = true
ignition = "can0.Engine.Gear"
speed = "can0.Engine.Speed"

[[events.triggers]]
name = "hot"
signal = "can0.Engine.Tmp"
above = 100.0

[[events.triggers]]
name = "nowhere"
signal = "zzz"
above = 1.0
""")
    code, verdict = check(path, capsys)
    assert code == 1 and not verdict["valid"]
    hot, nowhere = verdict["problems"]
    assert hot.startswith("events.triggers 'hot': signal 'can0.Engine.Tmp' is not a signal of "
                          "any source (did you mean 'can0.Engine.Temp'")
    assert nowhere == ("events.triggers 'nowhere': signal 'zzz' is not a signal of any source "
                       "(signals are <source>.<Message>.<Signal>)")


def test_a_rule_matching_nothing_is_a_warning_and_a_problem_with_strict(tmp_path, capsys):
    path = write_config(tmp_path, """
[[sampling.signals]]
match = "can0.Engine.*"

[[sampling.signals]]
match = "can0.ESP_*"
""")
    code, verdict = check(path, capsys)
    assert code == 0 and verdict["valid"]
    assert verdict["warnings"] == [
        "sampling plan: rule 'can0.ESP_*' matches no signal of any source"]
    assert main(["config", "check", str(path)]) == 0
    assert "warning: sampling plan: rule 'can0.ESP_*' matches no signal" in \
        capsys.readouterr().err
    code, verdict = check(path, capsys, "--strict")
    assert code == 1 and verdict["problems"] == [
        "sampling plan: rule 'can0.ESP_*' matches no signal of any source"]


def test_triggers_while_events_are_disabled_are_a_warning(tmp_path, capsys):
    path = write_config(tmp_path, """
[[events.triggers]]
name = "fast"
signal = "can0.Engine.Speed"
above = 100.0
capture = ["can0.Engine.*", "can0.Brakes.*"]
""")
    code, verdict = check(path, capsys)
    assert code == 0 and verdict["problems"] == []
    assert verdict["warnings"] == [
        "events: 1 [[events.triggers]] set but [events] enabled = false: they never fire",
        "events.triggers 'fast': capture 'can0.Brakes.*' matches no signal of any source"]


def test_the_documented_default_says_to_check_a_file_with_config_check():
    header = (REPO / "config.toml").read_text().split("\n\n", 1)[0]
    assert "edge-agent config check" in header and "edge-agent run" not in header


def test_every_mistake_is_reported_in_one_run(tmp_path, capsys):
    path = write_config(tmp_path, """
[sampling]
period = -1.0

[ring]
memory_mb = 0.0
""").read_text().replace("tls = false", "tls = true")
    config = tmp_path / "three.toml"
    config.write_text(path)
    lines = config.read_text().splitlines()
    code, verdict = check(config, capsys)
    assert code == 1
    assert verdict["problems"] == [
        f"{config}:{lines.index('period = -1.0') + 1}: [sampling] period: must be a positive "
        "number of seconds",
        f"{config}:{lines.index('memory_mb = 0.0') + 1}: [ring] memory_mb: must be a positive "
        "number of MB",
        f"{config}:{lines.index('[uplink]') + 1}: [uplink] ca_cert: TLS needs ca_cert, cert and "
        "key (or set tls = false explicitly to publish in plaintext)"]
    assert main(["run", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "[sampling] period" in error and "[ring] memory_mb" in error and "[uplink]" in error


PLANNED = """
[[sampling.signals]]
match = "can0.Engine.*"
period = 0.5

[[sampling.signals]]
match = "can0.Chassis.Height"
mode = "stats"

[ring]
memory_mb = 1.0
"""


def test_a_valid_config_ends_with_its_plan_summary(tmp_path, capsys):
    """Signals per source and mode, the frame IDs let through, the upload a month at 1 h a
    day from the measured bytes per sample, and the ring's look-back; in --json too."""
    path = write_config(tmp_path, PLANNED)
    code, verdict = check(path, capsys)
    assert code == 0 and verdict["valid"]
    plan = verdict["plan"]
    assert plan["sources"] == [{"source": "can0", "signals": 4,
                                "modes": {"last": 3, "stats": 1},
                                "frame_ids": ["0x100", "0x200"]}]
    assert plan["samples_per_s"] == 7.0  # 3 signals at 2 Hz, 1 at 1 Hz
    assert plan["bytes_per_sample"] == 0.2617
    assert plan["mb_per_month"] == round(7 * 3600 * 30 * 0.2617 / 1e6, 2)
    assert plan["ring_records"] == 1024 * 1024 // 19
    assert plan["ring_records_per_s"] == 10.0  # a stats sample is four records
    assert plan["ring_lookback_s"] == round(1024 * 1024 // 19 / 10, 1)

    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "can0: 4 signals (3 last, 1 stats); 2 frame IDs let through the kernel filter" in out
    assert "about 0.2 MB a month at 1 h a day" in out
    assert "5519 s of look-back at 10 records/s" in out


def test_an_invalid_config_has_no_plan_summary(tmp_path, capsys):
    path = write_config(tmp_path, PLANNED + '\n[[sampling.signals]]\nmatch = "x"\nmode = "nope"\n')
    code, verdict = check(path, capsys)
    assert code == 1 and verdict["plan"] is None


def test_expression_triggers_are_type_checked_with_did_you_mean(tmp_path, capsys):
    path = write_config(tmp_path, """
[events]
enabled = true
ignition = "can0.Engine.Gear"
speed = "can0.Engine.Speed"

[[events.triggers]]
name = "hot in drive"
when = 'can0.Engine.Tmp > 100 and can0.Engine.Gear == "D"'

[[events.triggers]]
name = "fine"
when = 'rising(can0.Engine.Gear == "D") or (can0.Engine.Temp > 100 for 2 s)'

[[events.triggers]]
name = "typed"
when = "can0.Engine.Speed + 1"
""")
    code, verdict = check(path, capsys)
    assert code == 1 and not verdict["valid"]
    hot, typed = verdict["problems"]
    assert hot.startswith("events.triggers 'hot in drive': when: unknown signal "
                          "'can0.Engine.Tmp'; did you mean can0.Engine.Temp")
    assert "at column 1 of" in hot
    assert typed.startswith("events.triggers 'typed': when: the expression is a number, not a "
                            "condition")


def test_an_expression_that_does_not_parse_or_a_trigger_with_both_is_invalid(tmp_path, capsys):
    path = write_config(tmp_path, """
[[events.triggers]]
name = "broken"
when = "can0.Engine.Speed > > 1"
""")
    code, verdict = check(path, capsys)
    assert code == 1
    assert "expected a value, a signal or a function, found '>' at column 21" in \
        verdict["problems"][0]
    path = write_config(tmp_path, """
[[events.triggers]]
name = "both"
signal = "can0.Engine.Speed"
when = "can0.Engine.Speed > 1"
""")
    code, verdict = check(path, capsys)
    assert code == 1 and "either `signal`" in verdict["problems"][0]
