"""The replay source on a multi-channel log: `channel` plays one log channel, and the sources
playing one log share its timeline (recorded timestamps, or one rebase offset for all)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import can
import pytest

from agent.config.schema import parse_config
from agent.sources.health import SourceHealth
from agent.sources.player import LOOP_GAP
from agent.sources.registry import open_source
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until

# A candump -L log of two buses: the frames of can0 and can1 interleave.
T0 = 1700000000.0
LOG = """\
(1700000000.000000) can0 100#01
(1700000000.010000) can1 200#02
(1700000000.020000) can0 100#03
(1700000000.050000) can1 200#04
(1700000000.100000) can0 101#05
"""
LOG_SPAN = 0.1  # first to last frame, of any channel

CONFIG = """
[vehicle]
id = "v1"

[keys]
signing_key = "k.key"

[uplink]
tls = false
"""


def source_config(name: str, channel: str | None, *, rebase: bool, loop: bool = False) -> str:
    return (f'[[sources]]\nname = "{name}"\ntype = "replay"\ndbc = ["a.dbc"]\n'
            f'path = "drive.log"\nspeed = 0\nrebase = {str(rebase).lower()}\n'
            f'loop = {str(loop).lower()}\n' + (f'channel = "{channel}"\n' if channel else ""))


def replay(tmp_path: Path, channels: dict[str, str | None], *, rebase: bool,
           loop: bool = False, frames: int = 0) -> dict[str, list[can.Message]]:
    """Run one replay source per entry of `channels` (name: log channel) on LOG until each
    has played it (or, looping, delivered `frames` frames); their frames by source."""
    (tmp_path / "drive.log").write_text(LOG, encoding="utf-8")
    text = CONFIG + "".join(source_config(name, channel, rebase=rebase, loop=loop)
                            for name, channel in channels.items())
    config = parse_config(text, tmp_path / "agent.toml")
    sources = [open_source(source, [], SourceHealth()) for source in config.sources]
    running = [RunningSource(source) for source in sources]
    for run in running:
        run.__enter__()
    try:
        assert wait_until(lambda: all(run.source.finished.is_set() if not loop
                                      else len(run.readings) >= frames for run in running),
                          timeout=20)
    finally:
        for run in running:
            run.__exit__(None, None, None)
    return {run.source.name: list(run.readings) for run in running}


def test_each_source_plays_only_its_channel_at_the_recorded_times(tmp_path):
    got = replay(tmp_path, {"front": "can0", "rear": "can1", "all": None}, rebase=False)
    assert [(f.arbitration_id, bytes(f.data), f.timestamp) for f in got["front"]] == [
        (0x100, b"\x01", T0), (0x100, b"\x03", T0 + 0.02), (0x101, b"\x05", T0 + 0.1)]
    assert [(f.arbitration_id, bytes(f.data), f.timestamp) for f in got["rear"]] == [
        (0x200, b"\x02", T0 + 0.01), (0x200, b"\x04", T0 + 0.05)]
    reader = list(can.LogReader(str(tmp_path / "drive.log")))
    assert [(f.arbitration_id, f.timestamp) for f in got["all"]] == [
        (f.arbitration_id, f.timestamp) for f in reader]


def test_rebased_sources_of_one_log_keep_its_relative_timing(tmp_path):
    before = time.time()
    got = replay(tmp_path, {"front": "can0", "rear": "can1"}, rebase=True)
    after = time.time()
    offsets = {round(f.timestamp - original, 6)
               for frames, originals in ((got["front"], (0.0, 0.02, 0.1)),
                                         (got["rear"], (0.01, 0.05)))
               for f, original in zip(frames, (T0 + o for o in originals), strict=True)}
    assert len(offsets) == 1, f"the sources were shifted differently: {offsets}"
    # one offset, decided from the log's first frame (can0's, at T0): it starts "now"
    start = T0 + offsets.pop()
    assert before <= start <= after


def test_looping_sources_stay_aligned_pass_after_pass(tmp_path):
    got = replay(tmp_path, {"front": "can0", "rear": "can1"}, rebase=False, loop=True,
                 frames=6)
    for name, per_pass in (("front", 3), ("rear", 2)):
        stamps = [f.timestamp for f in got[name]]
        # each pass is later by the whole log's span (not the channel's) and the loop gap
        assert [round(b - a, 6) for a, b in zip(stamps, stamps[per_pass:], strict=False)] == [
            LOG_SPAN + LOOP_GAP] * (len(stamps) - per_pass), name


def test_vector_logs_name_channels_as_the_file_does(tmp_path):
    path = tmp_path / "drive.asc"
    with can.ASCWriter(str(path)) as writer:  # python-can's channel 0 is the file's 1
        for channel, arbitration_id in ((0, 0x100), (1, 0x200), (0, 0x101), (1, 0x201)):
            writer.on_message_received(can.Message(
                timestamp=T0 + arbitration_id / 1000, arbitration_id=arbitration_id,
                is_extended_id=False, data=b"\x01", channel=channel))
    assert " 2  200 " in path.read_text()
    text = CONFIG + source_config("rear", "2", rebase=False).replace("drive.log", "drive.asc")
    config = parse_config(text, tmp_path / "agent.toml")
    source = open_source(config.sources[0], [], SourceHealth())
    with RunningSource(source) as run:
        assert wait_until(source.finished.is_set, timeout=20)
    assert [f.arbitration_id for f in run.readings] == [0x200, 0x201]


def test_a_channel_the_log_lacks_is_reported_with_the_channels_it_has(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="agent.sources.player"):
        got = replay(tmp_path, {"body": "can2"}, rebase=False)
    assert got["body"] == []
    assert f"{tmp_path / 'drive.log'}: no frame on channel 'can2' (the log's channels: " \
           "can0, can1)" in caplog.messages


@pytest.mark.parametrize("channel", ['channel = "can1"', ""])
def test_the_replay_channel_is_optional_in_config(tmp_path, channel):
    text = CONFIG + source_config("rear", None, rebase=True) + channel + "\n"
    config = parse_config(text, tmp_path / "agent.toml")
    assert config.sources[0].channel == ("can1" if channel else "")


def test_a_malformed_line_ends_the_replay_with_a_clear_error(tmp_path, monkeypatch, caplog):
    """Found by fuzzing: python-can's candump reader raised IndexError on a line such as
    "(inf) 0 3B1787F3##", which escaped the player thread; the frames before it are played,
    the replay ends there with one error naming the log and the line, and the source
    finishes."""
    monkeypatch.setattr(__name__ + ".LOG", LOG + "(inf) 0 3B1787F3##\n")
    with caplog.at_level(logging.ERROR, logger="agent.sources.replay"):
        got = replay(tmp_path, {"all": None}, rebase=False)
    assert len(got["all"]) == 5
    assert any(f"cannot replay {tmp_path / 'drive.log'} after 5 frames: LogFormatError: "
               f"{tmp_path / 'drive.log'}, line 6: not a candump -L line" in m
               for m in caplog.messages), caplog.messages


def test_frames_without_a_finite_timestamp_are_left_out(tmp_path, monkeypatch, caplog):
    """Found by fuzzing: "(1e400) 7 D1EE0#e8" gave a frame stamped inf, which event time
    cannot place (the sampler's int(now * 1000) overflows)."""
    monkeypatch.setattr(__name__ + ".LOG", LOG + "(1e400) can0 100#06\n(nan) can1 200#07\n")
    with caplog.at_level(logging.WARNING, logger="agent.sources.player"):
        got = replay(tmp_path, {"all": None}, rebase=False)
    assert [frame.timestamp for frame in got["all"]] == [
        T0, T0 + 0.01, T0 + 0.02, T0 + 0.05, T0 + 0.1]
    assert sum("no finite timestamp" in message for message in caplog.messages) == 1
