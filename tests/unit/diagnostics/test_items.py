"""Data items, the catalogue file, DTC names and changes: pure functions."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.diagnostics.config import load_catalogue
from agent.diagnostics.dtcs import changes, code_name, describe, state
from agent.diagnostics.items import DataItem, DecodeError, decode, encode
from agent.diagnostics.pids import PIDS
from agent.errors import ConfigError


@st.composite
def items_and_raws(draw):
    size = draw(st.integers(1, 4))
    signed = draw(st.booleans())
    count = draw(st.integers(1, 6))
    bits = 8 * size
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    raws = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
    scale = draw(st.sampled_from([1, 0.1, 0.25, 0.001, 2]))
    offset = draw(st.sampled_from([0, -40, 10]))
    return DataItem("x", size=size, count=count, signed=signed, scale=scale, offset=offset,
                    summary=draw(st.booleans())), raws


@given(items_and_raws())
def test_decode_reads_big_endian_raws_scaled(case):
    item, raws = case
    data = b"".join(raw.to_bytes(item.size, "big", signed=item.signed) for raw in raws)
    decoded = decode(item, data)
    values = [raw * item.scale + item.offset for raw in raws]
    names = ["x"] if item.count == 1 else [f"x_{i}" for i in range(1, item.count + 1)]
    assert [decoded[name] for name in names] == values
    assert list(decoded) == list(item.quantities())
    if item.summary:
        assert decoded["x_spread"] == max(values) - min(values)
    assert encode(item, values) == data


@given(st.binary(max_size=20))
def test_an_answer_of_the_wrong_length_is_a_decode_error(data):
    item = DataItem("cells", size=2, count=4)
    if len(data) == 8:
        assert len(decode(item, data)) == 4
    else:
        with pytest.raises(DecodeError):
            decode(item, data)


def test_builtin_pids_follow_sae_j1979():
    assert decode(PIDS[0x0C], bytes([0x2E, 0xE0])) == {"engine_speed": 3000.0}
    assert decode(PIDS[0x05], bytes([130])) == {"coolant_temperature": 90}
    assert decode(PIDS[0x0D], bytes([88])) == {"vehicle_speed": 88}


def test_dtc_names_follow_sae_j2012():
    assert code_name(0x030100) == "P0301"
    assert code_name(0x030117) == "P0301-17"
    assert code_name(0xC10000) == "U0100"
    assert code_name(0x4A8000 | 0x0) == "C0A80"
    assert describe("P0301-17") == "Cylinder 1 misfire detected"
    assert state(0x09) == "confirmed" and state(0x04) == "pending" and state(0x01) == "stored"


def test_changes_say_new_confirmed_and_cleared():
    first = changes("engine", None, {"P0301": 0x04, "P0420": 0x08})
    assert [(c.code, c.change, c.state) for c in first] == [
        ("P0301", "new", "pending"), ("P0420", "new", "confirmed")]
    later = changes("engine", {"P0301": 0x04, "P0420": 0x08}, {"P0301": 0x0C})
    assert [(c.code, c.change) for c in later] == [("P0301", "confirmed"),
                                                   ("P0420", "cleared")]
    assert changes("engine", {"P0301": 0x08}, {"P0301": 0x09}) == []


def test_the_example_catalogue_loads():
    catalogue = load_catalogue(Path(__file__).parents[3] / "dbc" / "example_dids.toml")
    assert catalogue[0x0101].count == 8 and catalogue[0x0101].summary
    assert catalogue[0x0103].scale == 0.1


@pytest.mark.parametrize(("text", "message"), [
    ("[[dids]]\nname = \"a\"\n", "missing required key 'did'"),
    ("[[dids]]\ndid = 1\nname = \"a\"\nsize = 9\n", "size must be 1..8"),
    ("[[dids]]\ndid = 1\nname = \"a\"\nscale = \"x\"\n", "scale must be float"),
    ("[[dids]]\ndid = 1\nname = \"a\"\n[[dids]]\ndid = 1\nname = \"b\"\n", "listed twice"),
    ("[[dids]]\ndid = 1\nname = \"a\"\nbits = 3\n", "unknown key 'bits'"),
    ("dids = 3\n[x]\n", "unknown top-level key 'x'"),
])
def test_catalogue_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_catalogue(path)
