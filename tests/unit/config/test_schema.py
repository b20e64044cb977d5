from pathlib import Path

import pytest

from agent.config.schema import load_config, parse_config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

MINIMAL = """
[vehicle]
id = "v1"

[[sources]]
name = "can0"
type = "socketcan"
channel = "can0"
dbc = ["a.dbc"]

[keys]
signing_key = "k.key"

[uplink]
tls = false
"""


def test_the_documented_default_config_loads():
    config = load_config(REPO / "config.toml")
    assert config.vehicle.id == "demo-0001"
    source = config.sources[0]
    assert source.type == "replay" and source.path == REPO / "dbc" / "drive.log.gz"
    assert config.uplink.tls and config.uplink.ca_cert == REPO / "tls" / "ca.crt"
    assert config.batch.window == 60.0 and config.batch.schema == 2
    assert config.state.directory == REPO / "state"


def test_defaults_and_relative_paths(tmp_path):
    config = parse_config(MINIMAL, tmp_path / "c.toml")
    assert config.sources[0].dbc == (tmp_path / "a.dbc",)
    assert config.sampling.period == 1.0 and config.ring.memory_mb == 4.0
    assert config.sources[0].receive_buffer_kb == 8192
    assert config.version == 1


@pytest.mark.parametrize("change, message", [
    (("[uplink]", "[uplink]\nhots = 'x'"), r"c.toml:\d+: \[uplink\] hots: unknown key"),
    (('id = "v1"', "id = 5"), r"c.toml:3: \[vehicle\] id: must be a string, got int 5"),
    (("tls = false", "tls = 'no'"), r"\[uplink\] tls: must be true or false"),
    (("tls = false", "tls = true"), r"\[uplink\] ca_cert: TLS needs ca_cert, cert and key"),
    (('channel = "can0"', ""), r"\[sources.can0\] channel: a socketcan bus needs a channel"),
    (('channel = "can0"', 'channel = "can0"\nreceive_buffer_kb = 0'),
     r"\[sources.can0\] receive_buffer_kb: must be a positive number of kB"),
    (('channel = "can0"', 'channel = "can0"\nreader = "fast"'),
     r"\[sources.can0\] reader: use one of raw, python-can"),
    (('dbc = ["a.dbc"]', "dbc = 'a.dbc'"), r"\[sources.can0\] dbc: must be a list"),
    (("[keys]\nsigning_key = \"k.key\"", ""), r"\[keys\]: missing required key"),
    (('id = "v1"', 'id = "v1"\n[batch]\nwindow = 0.5'), r"\[batch\] window: must be at least"),
    (('id = "v1"', 'id = "v1"\n[batch]\nschema = 3'), r"\[batch\] schema: 3 is not one of 1, 2"),
    (('id = "v1"', 'id = "v1"\n[batch]\nheartbeat = 30'), r"\[batch\] heartbeat: must be 0 "),
    (('id = "v1"', 'id = "v1"\n[batch]\nheartbeat = -1'), r"\[batch\] heartbeat: must be 0 "),
    (('id = "v1"', 'id = "v1"\n[batch]\ndictionary_every = -1'),
     r"\[batch\] dictionary_every: must be 0 "),
    (("[vehicle]", "[vehicle\n"), r"not valid TOML"),
])
def test_mistakes_name_the_file_line_and_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(MINIMAL.replace(*change), tmp_path / "c.toml")


def test_sampling_rules_are_checked(tmp_path):
    text = MINIMAL + '\n[[sampling.signals]]\nmatch = "*"\nmode = "median"\n'
    with pytest.raises(ConfigError, match="'median' is not one of last, stats"):
        parse_config(text, tmp_path / "c.toml")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.toml")


VALUE_SOURCES = MINIMAL + """
[[sources]]
name = "gps"
type = "gpsd"

[[sources]]
name = "tpms"
type = "serial"
port = "/dev/ttyTPMS"
baudrate = 19200
protocol = "tpms-binary"
stale_after = 30
"""


def test_gpsd_and_serial_sources_need_no_dbc(tmp_path):
    config = parse_config(VALUE_SOURCES, tmp_path / "c.toml")
    gps, tpms = config.sources[1:]
    assert (gps.type, gps.host, gps.port, gps.dbc) == ("gpsd", "127.0.0.1", 2947, ())
    assert (tpms.port, tpms.baudrate, tpms.protocol, tpms.stale_after) == (
        "/dev/ttyTPMS", 19200, "tpms-binary", 30.0)


@pytest.mark.parametrize("change, message", [
    (('protocol = "tpms-binary"', 'protocol = "modbus"'),
     r"c.toml:\d+: \[sources.tpms\] protocol: unknown protocol 'modbus'; known: nmea, "
     r"tpms-binary"),
    (('port = "/dev/ttyTPMS"', ""), r"\[sources.tpms\] port: the serial device"),
    # Each source type has its own keys, typed: a serial device is a string, a port a number.
    (('port = "/dev/ttyTPMS"', "port = 5"), r"\[sources.tpms\] port: must be a string, got int"),
    (('type = "gpsd"', 'type = "gpsd"\nport = "x"'), r"\[sources.gps\] port: must be an integer"),
    (('type = "gpsd"', 'type = "gpsd"\nport = 70000'), r"\[sources.gps\] port: gpsd's TCP port"),
    (('type = "gpsd"', 'type = "gpsd"\ndbc = ["a.dbc"]'), r"\[sources.gps\] dbc: a gpsd source "
     r"has no DBC"),
    (("stale_after = 30", "stale_after = 0"), r"\[sources.tpms\] stale_after: must be positive"),
    (("baudrate = 19200", "baudrate = true"), r"\[sources.tpms\] baudrate: must be a number"),
])
def test_value_source_mistakes_are_named(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(VALUE_SOURCES.replace(*change), tmp_path / "c.toml")


def test_strict_is_off_by_default_and_only_for_sources_with_a_dbc(tmp_path):
    config = parse_config(MINIMAL.replace('dbc = ["a.dbc"]', 'dbc = ["a.dbc"]\nstrict = true'),
                          tmp_path / "c.toml")
    assert config.sources[0].strict
    assert not parse_config(MINIMAL, tmp_path / "c.toml").sources[0].strict
    text = VALUE_SOURCES.replace('type = "gpsd"', 'type = "gpsd"\nstrict = true')
    with pytest.raises(ConfigError, match=r"c.toml:\d+: \[sources.gps\] strict: a gpsd source "
                                          r"has no DBC"):
        parse_config(text, tmp_path / "c.toml")


def test_each_source_knows_the_line_of_its_own_dbc_key(tmp_path):
    text = MINIMAL + '\n[[sources]]\nname = "can1"\ntype = "replay"\npath = "x.log"\n' \
                     'dbc = ["b.dbc"]\n'
    config = parse_config(text, tmp_path / "c.toml")
    lines = text.splitlines()
    for source, dbc in zip(config.sources, ('["a.dbc"]', '["b.dbc"]'), strict=True):
        line = next(n for n, t in enumerate(lines, start=1) if t == f"dbc = {dbc}")
        assert source.dbc_origin == f"{tmp_path / 'c.toml'}:{line}: [sources.{source.name}] dbc"
    # not a key a file may set
    with pytest.raises(ConfigError, match=r"\[sources.can0\] dbc_origin: unknown key"):
        parse_config(MINIMAL.replace('dbc = ["a.dbc"]', 'dbc = ["a.dbc"]\ndbc_origin = "x"'),
                     tmp_path / "c.toml")


def test_errors_in_a_later_source_name_its_own_lines(tmp_path):
    first = MINIMAL.replace('dbc = ["a.dbc"]', 'dbc = ["a.dbc"]\nreceive_buffer_kb = 64')
    text = first + '\n[[sources]]\nname = "can1"\ntype = "socketcan"\nchannel = "can1"\n' \
                   'receive_buffer_kb = 0\ndbc = ["b.dbc"]\n'
    line = text.splitlines().index("receive_buffer_kb = 0") + 1
    with pytest.raises(ConfigError, match=rf"c.toml:{line}: \[sources.can1\] receive_buffer_kb"):
        parse_config(text, tmp_path / "c.toml")
    # a key the entry lacks: its own [[sources]] line, not the key in another entry
    text = first + '\n[[sources]]\nname = "can1"\ntype = "socketcan"\ndbc = ["b.dbc"]\n'
    header = len(first.splitlines()) + 2
    assert text.splitlines()[header - 1] == "[[sources]]"
    with pytest.raises(ConfigError, match=rf"c.toml:{header}: \[sources.can1\] channel"):
        parse_config(text, tmp_path / "c.toml")


def test_max_lateness_defaults_to_two_seconds_and_is_bounded(tmp_path):
    assert parse_config(MINIMAL, tmp_path / "c.toml").sampling.max_lateness == 2.0
    sampling = MINIMAL + "\n[sampling]\nmax_lateness = {}\n"
    assert parse_config(sampling.format(60), tmp_path / "c.toml").sampling.max_lateness == 60.0
    assert parse_config(sampling.format(0.25), tmp_path / "c.toml").sampling.max_lateness == 0.25
    line = sampling.splitlines().index("max_lateness = {}") + 1
    for bad in ("0", "-1", "60.5"):
        with pytest.raises(ConfigError, match=rf"c.toml:{line}: \[sampling\] max_lateness: must "
                                              r"be more than 0 and at most 60 seconds"):
            parse_config(sampling.format(bad), tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"\[sampling\] max_lateness: must be a number"):
        parse_config(sampling.format("'2s'"), tmp_path / "c.toml")


@pytest.mark.parametrize("version", [2**53, 2**70, -1])
def test_the_config_version_is_bounded_so_batches_carry_it_as_a_uint64(tmp_path, version):
    with pytest.raises(ConfigError, match=r"c.toml:2: \[version\]: must be a whole number "
                                          r"from 0 to 9007199254740991"):
        parse_config(f"\nversion = {version}\n" + MINIMAL, tmp_path / "c.toml")
    assert parse_config(f"version = {2**53 - 1}\n" + MINIMAL,
                        tmp_path / "c.toml").version == 2**53 - 1


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    """Found by fuzzing: bytes that are not UTF-8 raised UnicodeDecodeError past every caller
    that handles ConfigError (the agent's start, config check, an OTA update's merge)."""
    path = tmp_path / "config.toml"
    path.write_bytes(b"\x88M\xfd\xc1B)")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0\)"):
        load_config(path)


def test_toml_nested_too_deep_is_a_config_error(tmp_path):
    """Found by fuzzing: tomllib recurses per nesting level, and RecursionError escaped."""
    with pytest.raises(ConfigError, match="nested too deep"):
        parse_config("sources = " + "[" * 5000 + "]" * 5000 + "\n", tmp_path / "c.toml")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("window = 60.0", "window = " + "9" * 400, r"\[batch\] window.*too large a number"),
    ('signing_key = "keys/vehicle.key"', 'signing_key = "~nosuchuser-here/vehicle.key"',
     "no such user"),
    ('signing_key = "keys/vehicle.key"', 'signing_key = "a\\u0000b"', "NUL character"),
])
def test_values_found_by_fuzzing_are_config_errors(tmp_path, old, new, message):
    """An integer past float range, an unknown ~user and a NUL in a path raised
    OverflowError, RuntimeError and ValueError past the config loader."""
    text = (REPO / "config.toml").read_text()
    assert old in text
    with pytest.raises(ConfigError, match=message):
        parse_config(text.replace(old, new), tmp_path / "c.toml")


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "-inf"])
@pytest.mark.parametrize(("section", "key"), [
    ("batch", "window"), ("batch", "heartbeat"), ("sampling", "period"), ("spool", "max_mb"),
    ("ota", "grace_period")])
def test_a_float_setting_must_be_finite(tmp_path, value, section, key):
    """nan passed every positive-number check (each `<= 0` is false for it) and broke the
    daemon later (`round(window * 1000)`); inf passed them too. Both name the key."""
    text = MINIMAL.replace(f"[{section}]\n", "") + f"\n[{section}]\n{key} = {value}\n"
    line = text.splitlines().index(f"{key} = {value}") + 1
    with pytest.raises(ConfigError, match=rf"c.toml:{line}: \[{section}\] {key}: must be a "
                                          r"finite number"):
        parse_config(text, tmp_path / "c.toml")


@pytest.mark.parametrize("rotation", ["0", "-1", "0.0004"])
def test_a_pseudonym_rotation_below_a_millisecond_is_refused(tmp_path, rotation):
    """The rotation period is floor(ms / round(rotation * 1000)): 0.0004 s passed the old
    positive-number check and divided by zero at the first batch."""
    text = MINIMAL + f"\n[privacy.pseudonym]\nrotation = {rotation}\n"
    with pytest.raises(ConfigError, match=r"\[privacy.pseudonym\] rotation: must be at least "
                                          r"0.001 s"):
        parse_config(text, tmp_path / "c.toml")
    assert parse_config(MINIMAL + "\n[privacy.pseudonym]\nrotation = 0.001\n",
                        tmp_path / "c.toml").privacy.pseudonym.rotation == 0.001
