import json
import os
import stat
import subprocess
import sys

import pytest

from agent.cli import main
from agent.decoding.dbc import load_dbc
from tests.helpers.agent_setup import REPO
from tests.helpers.dbc_fixtures import write_small_dbc

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_keys_gen_makes_a_private_key_only_the_owner_can_read(tmp_path, capsys):
    key = tmp_path / "keys" / "vehicle.key"
    assert main(["keys", "gen", "--out", str(key), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert result["public_key"] == str(key.with_suffix(".pub")) and len(result["kid"]) == 16
    assert main(["keys", "id", str(key.with_suffix(".pub"))]) == 0
    assert capsys.readouterr().out.strip() == result["kid"]
    assert main(["keys", "gen", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_keys_gen_force_never_writes_the_new_key_into_a_readable_file(tmp_path, capsys):
    """--force over a 0644 file: the new key goes into a new 0600 file that replaces it, so
    whoever could read (or held open) the old file never sees the new key."""
    key = tmp_path / "vehicle.key"
    key.write_text("an old key, readable by all\n")
    key.chmod(0o644)
    with key.open("rb") as held_open:
        assert main(["keys", "gen", "--out", str(key), "--force", "--json"]) == 0
        assert held_open.read() == b"an old key, readable by all\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.with_suffix(".pub").stat().st_mode) == 0o644  # for the backend
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    kid = json.loads(capsys.readouterr().out)["kid"]
    assert main(["keys", "id", str(key.with_suffix(".pub"))]) == 0
    assert capsys.readouterr().out.strip() == kid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vehicle.key", "vehicle.pub"]


def test_decode_writes_one_json_object_per_frame(tmp_path, capsys):
    dbc = write_small_dbc(tmp_path)
    engine = load_dbc([dbc]).database.get_message_by_name("Engine")
    data = engine.encode({"Speed": 12.5, "Temp": 30, "Gear": 3}).hex().upper()
    log = tmp_path / "drive.log"
    log.write_text(f"(1.000000) can0 100#{data}\n(1.100000) can0 123#00\n"
                   f"(1.200000) can0 100#0102\n(1.300000) can0 18FF0000#0100000000000000\n")
    assert main(["decode", "--dbc", str(dbc), str(log)]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0] == {"t": 1.0, "id": "0x100", "extended": False, "name": "Engine",
                          "signals": {"Speed": 12.5, "Temp": 30, "Gear": "D"}}
    assert records[1]["error"] == "unknown frame id"
    assert records[2]["error"].startswith("cannot decode")
    assert records[3]["signals"] == {"Dtc": 1} and records[3]["extended"] is True
    assert json.loads(captured.err.strip().splitlines()[-1]) == {
        "frames": 4, "decoded": 2, "unknown_id": 1, "errors": 1}
    assert main(["decode", "--raw", "--dbc", str(dbc), str(log)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["signals"] == {
        "Speed": 1250, "Temp": 70, "Gear": 3}


@pytest.mark.parametrize("args, message", [
    (["decode", "--dbc", "missing.dbc", "x.log"], "cannot read DBC file"),
    (["run", "--config", "missing.toml"], "cannot read the config file"),
])
def test_user_mistakes_exit_2_with_a_clear_message(tmp_path, capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_a_dbc_cantools_rejects_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.dbc"
    bad.write_text("BO_ abc\n")
    log = tmp_path / "x.log"
    log.write_text("")
    assert main(["decode", "--dbc", str(bad), str(log)]) == 2
    assert f"{bad}: cantools rejects this DBC: Invalid syntax at line 1" in capsys.readouterr().err
    log.write_text("not a dbc")
    assert main(["decode", "--dbc", str(log), str(log)]) == 2
    assert "cantools rejects this DBC" in capsys.readouterr().err


def test_a_file_with_no_messages_is_not_taken_for_a_dbc(tmp_path, capsys):
    empty = tmp_path / "empty.dbc"
    empty.write_text('VERSION ""\n')
    assert main(["decode", "--dbc", str(empty), str(empty)]) == 2
    assert "defines no CAN messages" in capsys.readouterr().err


def test_decode_reads_candump_text_from_stdin(tmp_path):
    """`candump -L can0 | edge-agent decode --dbc X -`: a real pipe into a real process."""
    dbc = write_small_dbc(tmp_path)
    engine = load_dbc([dbc]).database.get_message_by_name("Engine")
    data = engine.encode({"Speed": 12.5, "Temp": 30, "Gear": 3}).hex().upper()
    result = subprocess.run([sys.executable, "-m", "agent", "decode", "--dbc", str(dbc), "-"],
                            input=f"(1.000000) can0 100#{data}\n(1.100000) can0 123#00\n",
                            capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["signals"] == {"Speed": 12.5, "Temp": 30, "Gear": "D"}
    assert records[1]["error"] == "unknown frame id"


def test_a_log_that_is_not_candump_names_the_file_and_line(tmp_path, capsys):
    dbc = write_small_dbc(tmp_path)
    log = tmp_path / "trace.log"
    log.write_text("(1.000000) can0 100#00\n\n(1.1) can0 100#00 extra words here\n")
    assert main(["decode", "--dbc", str(dbc), str(log)]) == 2
    error = capsys.readouterr().err
    assert f"{log}, line 3: not a candump -L line" in error
    assert "too many values to unpack" not in error.split("(expected")[0]
