"""The parsed-DBC cache (agent/decoding/cache.py): a database read back from it decodes as the
one cantools parsed, for every production DBC of opendbc and for generated ones; a damaged,
foreign or unreachable entry means parsing again, never an error."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import cantools
import pytest
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.decoding import dbc
from agent.decoding.cache import (
    FORMAT,
    KEPT,
    SUFFIX,
    DbcCache,
    cache_key,
    cantools_version,
    decoding_tables,
)
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import message_decoder
from agent.errors import DbcError
from agent.sampling.plan import source_signals
from tests.helpers.dbc_fixtures import write_small_dbc
from tests.unit.decoding.test_dbc import write_overlapping_dbc
from tests.unit.decoding.test_real_dbcs import _check_warnings, opendbc_folder

PAYLOADS = 8  # random payloads decoded per message, besides all-zero and all-ones


@pytest.fixture(autouse=True)
def _no_parsed_in_memory():
    """Each load goes to the disk cache or cantools, not to the in-process one."""
    dbc._PARSED.clear()
    yield
    dbc._PARSED.clear()


def cold_and_warm(paths: list[Path], cache: DbcCache):
    """The database as cantools parses it (written to `cache` on the way) and as the cache
    gives it back to another process."""
    parsed = load_dbc(paths, cache=cache)
    dbc._PARSED.clear()
    warm = load_dbc(paths, cache=cache)
    dbc._PARSED.clear()
    return parsed, warm


def entries(cache: DbcCache) -> list[Path]:
    return sorted(cache.folder.glob(f"*{SUFFIX}"))


def assert_decodes_alike(parsed: Database, cached: Database, seed: str) -> None:
    """Every message, by cantools' own decode (scaled, choices) and by the agent's raw decoder,
    on zeros, ones and random payloads (short and long ones too), gives the same values or
    the same refusal; so do the planned signals (keys, scale, offset, unit, choices)."""
    rng = random.Random(seed)
    for a, b in zip(parsed.messages, cached.messages, strict=True):
        payloads = [bytes(a.length), b"\xff" * a.length]
        payloads += [rng.randbytes(rng.randint(0, a.length + 2)) for _ in range(PAYLOADS)]
        ours_a, ours_b = message_decoder(a), message_decoder(b)
        for payload in payloads:
            assert _outcome(ours_a, payload) == _outcome(ours_b, payload), (a.name, payload)
            full_a = _outcome(lambda data, m=a: m.decode(data, allow_truncated=True), payload)
            full_b = _outcome(lambda data, m=b: m.decode(data, allow_truncated=True), payload)
            assert full_a == full_b, (a.name, payload)
    assert list(source_signals("car", parsed)) == list(source_signals("car", cached))
    for message in parsed.messages:
        assert cached.get_message_by_frame_id(message.frame_id).name == \
            parsed.get_message_by_frame_id(message.frame_id).name


def _outcome(decode, payload):
    try:
        decoded = decode(payload)
    except Exception as exc:  # the same refusal, whatever cantools raises
        return ("refused", type(exc).__name__, str(exc))
    # NamedSignalValue compares by value and name; repr keeps int 1 apart from float 1.0
    return {name: (repr(value), str(value)) for name, value in decoded.items()}


def test_every_opendbc_dbc_decodes_alike_from_the_cache(tmp_path):
    """cantools (the parsed database) is the oracle; the warm load also passes the strict-mode
    warning checks of test_real_dbcs."""
    cache = DbcCache(tmp_path / "cache")
    root = opendbc_folder()
    compared, problems = 0, []
    for path in sorted(root.rglob("*.dbc")):
        try:
            parsed, warm = cold_and_warm([path], cache)
        except DbcError:
            continue  # cantools refuses it: nothing cached (test_real_dbcs checks the error)
        compared += 1
        name = path.relative_to(root).as_posix()
        # The tables as read from the entry, with no cantools object built: what `config
        # check` and the plan use.
        assert list(source_signals("car", warm.tables)) == \
            list(source_signals("car", parsed.database)), name
        assert warm.database is not parsed.database
        assert decoding_tables(warm.database) == decoding_tables(parsed.database), name
        assert warm.warnings == parsed.warnings, name
        assert warm.digest == parsed.digest
        assert_decodes_alike(parsed.database, warm.database, name)
        problems += _check_warnings(name, warm)
    assert compared == 115 - 21 - 8  # test_real_dbcs: the files cantools reads
    assert not problems, "\n".join(problems)


def test_a_warm_load_reads_the_entry_and_does_not_parse(tmp_path):
    path = write_small_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    cold_and_warm([path], cache)
    [entry] = entries(cache)
    document = json.loads(entry.read_bytes())
    assert document["format"] == FORMAT and document["cantools"] == cantools.__version__
    # The entry, not the file, is what a warm load reads: change the entry's unit and see it.
    document["messages"][0]["signals"][0]["unit"] = "from-the-cache"
    entry.write_text(json.dumps(document))
    warm = load_dbc([path], cache=cache)
    assert warm.database.messages[0].signals[0].unit == "from-the-cache"


def test_the_cantools_version_is_read_without_importing_cantools():
    """The key names cantools' version, read from its installed metadata: the one cantools
    itself reports (the cache never imports cantools to learn it)."""
    assert cantools_version() == cantools.__version__


def test_a_warm_load_builds_no_cantools_object_until_one_is_asked_for(tmp_path):
    path = write_small_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    parsed, _ = cold_and_warm([path], cache)
    warm = load_dbc([path], cache=cache)
    assert warm.parsed._database is None  # planning and checking read the tables
    assert warm.tables == parsed.tables
    assert decoding_tables(warm.database) == decoding_tables(parsed.database)
    assert warm.database is warm.database  # made once, then kept


def test_tables_that_cantools_refuses_are_parsed_anew_when_the_database_is_made(tmp_path):
    """An entry damaged so that it still reads as tables (a length 0 is an integer) but
    cantools' constructors refuse it: the load gives the tables, and the database (made
    later, when frames are to be decoded) comes from the files, as do the tables from then."""
    path = write_small_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    parsed, _ = cold_and_warm([path], cache)
    [entry] = entries(cache)
    document = json.loads(entry.read_bytes())
    document["messages"][0]["signals"][0]["length"] = 0
    entry.write_text(json.dumps(document))
    damaged = load_dbc([path], cache=cache)
    assert damaged.tables.messages[0].signals[0].length == 0
    assert decoding_tables(damaged.database) == decoding_tables(parsed.database)
    assert damaged.tables == parsed.tables


def test_the_key_covers_content_formats_and_cantools_version(tmp_path):
    digest = bytes(32)
    assert cache_key(digest, ("DBC",)) != cache_key(bytes([1]) + bytes(31), ("DBC",))
    assert cache_key(digest, ("DBC",)) != cache_key(digest, ("DBC", "DBC"))
    path = write_small_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    cold_and_warm([path], cache)
    path.write_text(path.read_text().replace("km/h", "mph"))
    changed = load_dbc([path], cache=cache)
    assert len(entries(cache)) == 2
    assert "mph" in {s.unit for m in changed.database.messages for s in m.signals}


@pytest.mark.parametrize("damage", [
    lambda data: data[:len(data) // 2],  # a torn write of an older version, a full disk
    lambda data: b"\x00" * len(data),
    lambda data: b"[]",
    lambda data: data.replace(b'"signals":[', b'"signals":[1,', 1),
    lambda data: data.replace(b'"length":', b'"length":"8","was":', 1),  # parses, wrong type
    lambda data: data.replace(b'"format":1', b'"format":0', 1),
    lambda data: data.replace(b'"warnings":[[0,', b'"warnings":[[7,', 1),  # a 2nd file's?
])
def test_a_damaged_entry_is_ignored_logged_and_written_anew(tmp_path, caplog, damage):
    path = write_overlapping_dbc(tmp_path)  # with warnings, which the entry keeps too
    cache = DbcCache(tmp_path / "cache")
    parsed, _ = cold_and_warm([path], cache)
    [entry] = entries(cache)
    good = entry.read_bytes()
    assert parsed.warnings and damage(good) != good
    entry.write_bytes(damage(good))
    with caplog.at_level(logging.DEBUG, logger="agent.decoding.cache"):
        again = load_dbc([path], cache=cache)
    assert decoding_tables(again.database) == decoding_tables(parsed.database)
    assert any("ignoring" in record.getMessage() for record in caplog.records)
    assert entry.read_bytes() == good


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                      max_size=4))
def test_whatever_an_entry_holds_a_load_never_fails(tmp_path, flips):
    """Bytes of the entry changed at random: the load gives a database, from the entry when it
    still reads as one, else parsed again; never an exception."""
    path = write_overlapping_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    parsed = load_dbc([path], cache=cache)
    dbc._PARSED.clear()
    [entry] = entries(cache)
    data = bytearray(entry.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    entry.write_bytes(bytes(data))
    loaded = load_dbc([path], cache=cache)
    dbc._PARSED.clear()
    assert loaded.database.messages and parsed.database.messages
    for message in loaded.database.messages:  # what building a pipeline does with them
        message_decoder(message)


def test_an_entry_under_another_key_is_not_used(tmp_path):
    small = write_small_dbc(tmp_path)
    cache = DbcCache(tmp_path / "cache")
    cold_and_warm([small], cache)
    [entry] = entries(cache)
    other = opendbc_folder() / "vw_mqb.dbc"
    key = cache_key(load_dbc([other]).digest, ("DBC",))
    dbc._PARSED.clear()
    (cache.folder / f"{key}{SUFFIX}").write_bytes(entry.read_bytes())  # small's tables
    loaded = load_dbc([other], cache=cache)
    assert len(loaded.database.messages) > 50


def test_a_folder_this_user_may_not_use_means_no_cache_and_no_error(tmp_path):
    path = write_small_dbc(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    cache = DbcCache.in_state(state)
    os.chmod(state, 0o500)  # read-only for its owner; root ignores modes, hence the checks
    try:
        loaded = load_dbc([path], cache=cache)
    finally:
        os.chmod(state, 0o700)
    assert loaded.database.messages
    assert not cache.folder.exists() or os.geteuid() == 0
    assert load_dbc([path], cache=DbcCache(tmp_path / "a-file" / "cache")).database.messages


def test_no_state_folder_is_made_for_the_cache(tmp_path):
    """`edge-agent config check` of a config whose state folder does not exist (yet) must not
    make it."""
    path = write_small_dbc(tmp_path)
    cache = DbcCache.in_state(tmp_path / "missing")
    load_dbc([path], cache=cache)
    assert not (tmp_path / "missing").exists()


def test_only_the_owner_of_the_folder_writes_into_it(tmp_path):
    """Another user (root on a vehicle) reads the agent's entries but writes none: they would
    be files the agent cannot read. Simulated with a folder owned by another uid."""
    if os.geteuid() != 0:
        pytest.skip("making a folder another user's needs root")
    path = write_small_dbc(tmp_path)
    folder = tmp_path / "cache"
    folder.mkdir()
    os.chown(folder, 12345, 12345)
    load_dbc([path], cache=DbcCache(folder))
    assert not list(folder.iterdir())


def test_old_entries_are_pruned(tmp_path):
    cache = DbcCache(tmp_path / "cache")
    for version in range(KEPT + 3):
        path = write_small_dbc(tmp_path)
        path.write_text(path.read_text().replace("km/h", f"v{version}"))
        load_dbc([path], cache=cache)
        dbc._PARSED.clear()
    assert len(entries(cache)) == KEPT


def test_other_formats_are_not_cached(tmp_path):
    kcd = tmp_path / "bus.kcd"
    kcd.write_text('<NetworkDefinition xmlns="http://kayak.2codeornot2code.org/1.0">'
                   '<Bus name="b"><Message id="0x100" name="M" length="8">'
                   '<Signal name="S" offset="0" length="8"/></Message></Bus>'
                   '</NetworkDefinition>')
    cache = DbcCache(tmp_path / "cache")
    assert load_dbc([kcd], cache=cache).database.messages
    assert not cache.folder.exists() or not entries(cache)


# Generated DBCs: messages and signals drawn at random, written out by cantools as a DBC,
# parsed back by the agent, then cached.

names = st.from_regex(r"[A-Z][A-Za-z0-9_]{0,10}", fullmatch=True)
numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False,
                                                       allow_infinity=False, width=32))


@st.composite
def signals(draw, length_bytes: int, name: str, multiplexed: bool) -> Signal:
    is_float = draw(st.booleans()) and length_bytes >= 4
    bits = draw(st.sampled_from([32] + ([64] if length_bytes >= 8 else []))) if is_float \
        else draw(st.integers(1, min(64, 8 * length_bytes)))
    byte_order = draw(st.sampled_from(["little_endian", "big_endian"]))
    start = draw(st.integers(0, 8 * length_bytes - 1))
    choices = None
    if not is_float and draw(st.booleans()):
        choices = {value: draw(names) for value in draw(st.sets(st.integers(0, 2**min(bits, 16)
                                                                            - 1), max_size=4))}
    scale = draw(st.one_of(st.just(1), numbers.filter(lambda value: value != 0)))
    offset = draw(st.one_of(st.just(0), numbers))
    return Signal(name=name, start=start, length=bits, byte_order=byte_order,
                  is_signed=not is_float and draw(st.booleans()),
                  conversion=BaseConversion.factory(scale=scale, offset=offset,
                                                    choices=choices, is_float=is_float),
                  minimum=draw(st.one_of(st.none(), numbers)),
                  maximum=draw(st.one_of(st.none(), numbers)),
                  unit=draw(st.one_of(st.none(), st.sampled_from(["km/h", "°C", "%"]))),
                  is_multiplexer=False,
                  multiplexer_ids=[draw(st.integers(0, 3))] if multiplexed else None,
                  multiplexer_signal="MUX" if multiplexed else None)


@st.composite
def databases(draw) -> Database:
    messages = []
    frame_ids = draw(st.lists(st.integers(1, 0x7FF), min_size=1, max_size=5, unique=True))
    for number, frame_id in enumerate(frame_ids):
        length = draw(st.sampled_from([1, 2, 4, 8]))
        multiplexed = length >= 2 and draw(st.booleans())
        members = [draw(signals(length, f"S{number}_{index}", multiplexed))
                   for index in range(draw(st.integers(1, 6)))]
        if multiplexed:
            members.append(Signal(name="MUX", start=0, length=2, is_multiplexer=True))
        extended = draw(st.booleans())
        messages.append(Message(frame_id=frame_id | (0x10000 if extended else 0),
                                name=f"M{number}_{draw(names)}", length=length,
                                signals=members, is_extended_frame=extended, strict=False))
    return Database(messages, strict=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(generated=databases())
def test_generated_dbcs_round_trip_to_the_same_tables_and_decode_alike(tmp_path, generated):
    path = tmp_path / "generated.dbc"
    path.write_text(generated.as_dbc_string(), encoding="cp1252")
    cache = DbcCache(tmp_path / "cache")
    for entry in entries(cache) if cache.folder.exists() else ():
        entry.unlink()
    dbc._PARSED.clear()
    parsed, warm = cold_and_warm([path], cache)
    assert decoding_tables(warm.database) == decoding_tables(parsed.database)
    assert warm.warnings == parsed.warnings
    assert_decodes_alike(parsed.database, warm.database, path.read_text(encoding="cp1252"))
