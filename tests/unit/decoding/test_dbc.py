"""agent/decoding/dbc.py: one parse per DBC content, shared; a changed file is parsed afresh;
overlapping signals are warnings (reported once) unless the source is strict; ARXML, KCD and
SYM load through cantools; errors name the config file and the line of the `dbc` key."""

import json
import logging
import shutil
from pathlib import Path

import cantools
import pytest

from agent.cli import main as edge_agent
from agent.config.schema import load_config
from agent.decoding.dbc import layout_problems, load_dbc
from agent.errors import DbcError
from agent.runtime.pipeline import load_plan
from tests.helpers.dbc_fixtures import write_small_dbc


def test_same_content_shares_one_parsed_database(tmp_path):
    first = write_small_dbc(tmp_path)
    copy = tmp_path / "copy.dbc"
    shutil.copy(first, copy)
    a, b = load_dbc([first]), load_dbc([copy])
    assert a.digest == b.digest
    assert a.database is b.database
    assert b.paths == (copy,)


def test_changed_content_is_parsed_again(tmp_path):
    path = write_small_dbc(tmp_path)
    before = load_dbc([path])
    path.write_text(path.read_text().replace("Engine", "Combustion"), encoding="cp1252")
    after = load_dbc([path])
    assert after.digest != before.digest
    assert after.database is not before.database
    assert {m.name for m in after.database.messages} != {m.name for m in
                                                           before.database.messages}


def test_a_rejected_file_is_not_remembered(tmp_path):
    bad = tmp_path / "bad.dbc"
    bad.write_text("BO_ this is not a DBC\n")
    for _ in range(2):
        with pytest.raises(DbcError, match=r"bad\.dbc"):
            load_dbc([bad])



OVERLAPS = """VERSION ""

NS_ :

BS_:

BU_: ECU

BO_ 256 Door: 8 ECU
 SG_ Open : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Ajar : 4|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Lock : 39|8@0+ (1,0) [0|255] "" Vector__XXX
 SG_ Child : 35|8@0+ (1,0) [0|255] "" Vector__XXX
 SG_ Window : 48|8@1+ (1,0) [0|255] "" Vector__XXX

BO_ 512 Seat: 8 ECU
 SG_ Page M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Heat m0 : 8|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Vent m1 : 8|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Tilt m1 : 12|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Belt : 56|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Mass m0 : 60|4@1+ (1,0) [0|15] "" Vector__XXX

BO_ 768 Mirror: 2 ECU
 SG_ Angle : 7|8@0+ (1,0) [0|255] "" Vector__XXX
 SG_ Fold : 8|12@1+ (1,0) [0|4095] "" Vector__XXX

BO_ 1024 Ext: 8 ECU
 SG_ Mux1 M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Mux2 m1M : 8|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ A m2 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ B m3 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ C m2 : 8|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ D m2 : 16|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ E m2 : 20|8@1+ (1,0) [0|255] "" Vector__XXX

SG_MUL_VAL_ 1024 Mux2 Mux1 1-1;
SG_MUL_VAL_ 1024 A Mux2 2-2;
SG_MUL_VAL_ 1024 B Mux2 3-3;
SG_MUL_VAL_ 1024 C Mux1 2-2;
SG_MUL_VAL_ 1024 D Mux1 2-2;
SG_MUL_VAL_ 1024 E Mux2 2-2;
"""

# Every layout problem in OVERLAPS, and why each is one.
EXPECTED = {
    ("Door", ("Open", "Ajar")),  # little endian: bits 4..7 of byte 0
    ("Door", ("Lock", "Child")),  # big endian: bits 3..0 of byte 4
    ("Seat", ("Vent", "Tilt")),  # the same page: both in every frame with Page = 1
    ("Seat", ("Belt", "Mass")),  # Belt is in every frame, so also in those of Mass's page
    ("Mirror", ("Fold",)),  # 12 bits from bit 8 of a 2-byte message
    ("Ext", ("A", "E")),  # both on page Mux2 = 2
}
# Not problems: Heat and Vent share bits on pages 0 and 1 of Page; C and Mux2, D and A share
# bits under Mux1 = 2 and Mux1 = 1 (A's page of Mux2 exists only under Mux1 = 1).


def write_overlapping_dbc(directory: Path) -> Path:
    path = directory / "overlaps.dbc"
    path.write_text(OVERLAPS, encoding="cp1252")
    return path


def test_overlapping_signals_load_with_one_warning_each(tmp_path, caplog):
    path = write_overlapping_dbc(tmp_path)
    with caplog.at_level(logging.WARNING, logger="agent.decoding.dbc"):
        loaded = load_dbc([path])
    assert sorted((w.message, w.signals) for w in loaded.warnings) == sorted(EXPECTED)
    assert [r.getMessage() for r in caplog.records] == [str(w) for w in loaded.warnings]
    assert f"{path}: message Door (0x100): signals Open and Ajar overlap" in caplog.messages
    assert f"{path}: message Mirror (0x300): signal Fold does not fit in its 2 bytes" \
        in caplog.messages
    assert [m.name for m in loaded.database.messages] == ["Door", "Seat", "Mirror", "Ext"]
    assert load_dbc([write_small_dbc(tmp_path)]).warnings == ()  # multiplexed, no overlap

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.decoding.dbc"):
        again = load_dbc([path])
    assert again.warnings == loaded.warnings and caplog.records == []  # reported once


def test_the_warnings_are_what_cantools_strict_mode_refuses(tmp_path):
    path = write_overlapping_dbc(tmp_path)
    lenient = cantools.database.load_file(path, strict=False)
    for message in lenient.messages:
        problems = layout_problems(message)
        try:
            message.refresh(strict=True)
        except cantools.database.Error as exc:
            refused = str(exc)
        else:
            refused = ""
        assert bool(refused) == bool(problems), message.name
        assert any(all(name in refused for name in names) for names in problems), refused
    with pytest.raises(cantools.database.Error):
        cantools.database.load_file(path, strict=True)


def test_strict_refuses_overlaps_naming_file_message_and_signals(tmp_path):
    path = write_overlapping_dbc(tmp_path)
    load_dbc([path])  # a lenient load first: its cached parse must not let strict pass
    with pytest.raises(DbcError) as refused:
        load_dbc([path], strict=True)
    text = str(refused.value)
    assert text.startswith(f"strict = true refuses {path}: message Door (0x100): signals "
                           "Open and Ajar overlap; ")
    assert "and 1 more" in text and text.endswith("drop strict to load it with these as "
                                                  "warnings")
    assert not load_dbc([write_small_dbc(tmp_path)], strict=True).warnings


def test_warnings_name_the_file_they_were_loaded_from(tmp_path):
    path = write_overlapping_dbc(tmp_path)
    copy = tmp_path / "copy.dbc"
    shutil.copy(path, copy)
    first, second = load_dbc([path]), load_dbc([copy])
    assert first.database is second.database
    assert {w.path for w in first.warnings} == {path}
    assert {w.path for w in second.warnings} == {copy}


def test_kcd_and_sym_load_through_cantools_own_loaders(tmp_path):
    dbc = load_dbc([write_small_dbc(tmp_path)]).database
    payload = bytes(range(1, 9))
    for suffix, text in ((".kcd", dbc.as_kcd_string()), (".sym", dbc.as_sym_string())):
        path = tmp_path / f"small{suffix}"
        path.write_text(text, encoding="utf-8")
        database = load_dbc([path]).database
        assert {m.name for m in database.messages} == {m.name for m in dbc.messages}
        for message in dbc.messages:
            other = database.get_message_by_name(message.name)
            assert other.frame_id == message.frame_id
            assert other.decode(payload, scaling=False) == message.decode(payload,
                                                                          scaling=False)
    broken = tmp_path / "broken.kcd"
    broken.write_text("<NetworkDefinition>", encoding="utf-8")
    with pytest.raises(DbcError, match=r"broken\.kcd: cantools rejects this KCD: "):
        load_dbc([broken])


ARXML = """<?xml version="1.0" encoding="UTF-8"?>
<AUTOSAR xmlns="http://autosar.org/schema/r4.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:schemaLocation="http://autosar.org/schema/r4.0 AUTOSAR_4-2-1.xsd">
 <AR-PACKAGES><AR-PACKAGE><SHORT-NAME>Net</SHORT-NAME><ELEMENTS>
  <CAN-CLUSTER><SHORT-NAME>Body</SHORT-NAME>
   <CAN-CLUSTER-VARIANTS><CAN-CLUSTER-CONDITIONAL><PHYSICAL-CHANNELS><CAN-PHYSICAL-CHANNEL>
    <SHORT-NAME>Ch</SHORT-NAME>
    <FRAME-TRIGGERINGS><CAN-FRAME-TRIGGERING><SHORT-NAME>DoorTrig</SHORT-NAME>
     <FRAME-REF DEST="CAN-FRAME">/Net/Door</FRAME-REF>
     <CAN-ADDRESSING-MODE>STANDARD</CAN-ADDRESSING-MODE><IDENTIFIER>291</IDENTIFIER>
    </CAN-FRAME-TRIGGERING></FRAME-TRIGGERINGS>
   </CAN-PHYSICAL-CHANNEL></PHYSICAL-CHANNELS></CAN-CLUSTER-CONDITIONAL></CAN-CLUSTER-VARIANTS>
  </CAN-CLUSTER>
  <CAN-FRAME><SHORT-NAME>Door</SHORT-NAME><FRAME-LENGTH>8</FRAME-LENGTH>
   <PDU-TO-FRAME-MAPPINGS><PDU-TO-FRAME-MAPPING><SHORT-NAME>DoorMap</SHORT-NAME>
    <PACKING-BYTE-ORDER>MOST-SIGNIFICANT-BYTE-LAST</PACKING-BYTE-ORDER>
    <PDU-REF DEST="I-SIGNAL-I-PDU">/Net/DoorPdu</PDU-REF><START-POSITION>0</START-POSITION>
   </PDU-TO-FRAME-MAPPING></PDU-TO-FRAME-MAPPINGS>
  </CAN-FRAME>
  <I-SIGNAL-I-PDU><SHORT-NAME>DoorPdu</SHORT-NAME><LENGTH>8</LENGTH>
   <I-SIGNAL-TO-PDU-MAPPINGS>
    <I-SIGNAL-TO-I-PDU-MAPPING><SHORT-NAME>OpenMap</SHORT-NAME>
     <I-SIGNAL-REF DEST="I-SIGNAL">/Net/Open</I-SIGNAL-REF>
     <PACKING-BYTE-ORDER>MOST-SIGNIFICANT-BYTE-LAST</PACKING-BYTE-ORDER>
     <START-POSITION>0</START-POSITION>
    </I-SIGNAL-TO-I-PDU-MAPPING>
    <I-SIGNAL-TO-I-PDU-MAPPING><SHORT-NAME>AngleMap</SHORT-NAME>
     <I-SIGNAL-REF DEST="I-SIGNAL">/Net/Angle</I-SIGNAL-REF>
     <PACKING-BYTE-ORDER>MOST-SIGNIFICANT-BYTE-LAST</PACKING-BYTE-ORDER>
     <START-POSITION>{angle_start}</START-POSITION>
    </I-SIGNAL-TO-I-PDU-MAPPING>
   </I-SIGNAL-TO-PDU-MAPPINGS>
  </I-SIGNAL-I-PDU>
  <I-SIGNAL><SHORT-NAME>Open</SHORT-NAME><LENGTH>8</LENGTH></I-SIGNAL>
  <I-SIGNAL><SHORT-NAME>Angle</SHORT-NAME><LENGTH>12</LENGTH></I-SIGNAL>
 </ELEMENTS></AR-PACKAGE></AR-PACKAGES>
</AUTOSAR>
"""


def test_arxml_loads_through_cantools_own_loader(tmp_path):
    path = tmp_path / "body.arxml"
    path.write_text(ARXML.format(angle_start=8), encoding="utf-8")
    loaded = load_dbc([path])
    door = loaded.database.get_message_by_frame_id(0x123)
    assert door.name == "Door" and loaded.warnings == ()
    assert door.decode(bytes([0x2A, 0x34, 0x12, 0, 0, 0, 0, 0]), scaling=False) == {
        "Open": 0x2A, "Angle": 0x234}
    path.write_text(ARXML.format(angle_start=4), encoding="utf-8")
    assert [(w.message, w.signals) for w in load_dbc([path]).warnings] == [
        ("Door", ("Open", "Angle"))]


CONFIG = """
[vehicle]
id = "v1"

[[sources]]
name = "can0"
type = "socketcan"
channel = "can0"
dbc = ["small.dbc"]

[[sources]]
name = "can1"
type = "socketcan"
channel = "can1"
{can1}

[keys]
signing_key = "k.key"

[uplink]
tls = false
"""


def write_config(directory: Path, can1: str) -> Path:
    write_small_dbc(directory)
    write_overlapping_dbc(directory)
    (directory / "bad.dbc").write_text("BO_ this is not a DBC\n", encoding="cp1252")
    path = directory / "agent.toml"
    path.write_text(CONFIG.format(can1=can1), encoding="utf-8")
    return path


def line_of(path: Path, text: str) -> int:
    return path.read_text().splitlines().index(text) + 1


def test_a_dbc_error_names_the_config_file_and_the_line_of_the_dbc_key(tmp_path):
    path = write_config(tmp_path, 'dbc = ["bad.dbc"]')
    with pytest.raises(DbcError) as error:
        load_plan(load_config(path))
    line = line_of(path, 'dbc = ["bad.dbc"]')
    assert str(error.value).startswith(f"{path}:{line}: [sources.can1] dbc: {tmp_path}/bad.dbc: "
                                       "cantools rejects this DBC: ")

    path = write_config(tmp_path, 'strict = true\ndbc = ["overlaps.dbc"]')
    with pytest.raises(DbcError) as error:
        load_plan(load_config(path))
    line = line_of(path, 'dbc = ["overlaps.dbc"]')
    assert str(error.value).startswith(f"{path}:{line}: [sources.can1] dbc: strict = true "
                                       f"refuses {tmp_path}/overlaps.dbc: message Door")


def test_config_check_shows_the_warnings_and_refuses_for_strict(tmp_path, capsys):
    path = write_config(tmp_path, 'dbc = ["overlaps.dbc"]')
    assert edge_agent(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: valid ({len(EXPECTED)} warnings above)\nplan:\n")
    assert (f"warning: dbc can1: {tmp_path}/overlaps.dbc: message Door (0x100): signals Open "
            "and Ajar overlap\n") in err
    assert err.count("warning: ") == len(EXPECTED)
    assert edge_agent(["config", "check", "--json", str(path)]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] and verdict["problems"] == []
    assert len(verdict["warnings"]) == len(EXPECTED)

    path = write_config(tmp_path, 'strict = true\ndbc = ["overlaps.dbc"]')
    assert edge_agent(["config", "check", "--json", str(path)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    line = line_of(path, 'dbc = ["overlaps.dbc"]')
    assert not verdict["valid"] and verdict["warnings"] == []
    assert verdict["problems"][0].startswith(f"dbc can1: {path}:{line}: [sources.can1] dbc: "
                                             "strict = true refuses")
