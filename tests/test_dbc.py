"""agent/dbc.py: one parse per DBC content, shared; a changed file is parsed afresh."""

import shutil

import pytest

from agent.dbc import load_dbc
from agent.errors import DbcError
from tests.dbc_fixtures import write_small_dbc


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
