"""The backend's signing tool and the top-level `edge-agent config check`."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from fleet.config_signing import main as ota_tools

from agent.cli import main as edge_agent
from agent.config.schema import load_config
from agent.ota.store import ConfigStore
from agent.ota.update import Reason, Trust, UpdateRejected, check_update, delivered_name, load_trust
from agent.runtime.control import ControlServer
from agent.wire.keys import generate_key_pair, key_id, load_private_key, load_public_key
from tests.helpers.ota_fixtures import LOCAL_CONFIG as LOCAL
from tests.unit.ota.test_update import NOW, signed, signed_document

REPO = Path(__file__).resolve().parents[3]
DBC = REPO / "dbc" / "vehicle.dbc"
UPDATE = """
[[sources]]
name = "can0"
type = "virtual"
channel = "bus9"
dbc = ["ev-2027.dbc"]
"""


def test_sign_references_or_embeds_the_dbc_and_the_vehicle_accepts_it(tmp_path, capsys):
    vehicle = tmp_path / "vehicle"
    vehicle.mkdir()
    shutil.copy(DBC, vehicle / "vehicle.dbc")
    (vehicle / "config.toml").write_text(LOCAL)
    backend = tmp_path / "backend"
    backend.mkdir()
    generate_key_pair(backend / "backend.key")
    (backend / "update.toml").write_text(UPDATE)
    shutil.copy(DBC, backend / "ev-2027.dbc")
    public = load_public_key(backend / "backend.pub")
    trust = Trust({key_id(public): public}, "car-1", frozenset({"eu-west"}), 1 << 20)

    assert ota_tools(["sign", str(backend / "update.toml"), "--key",
                      str(backend / "backend.key"), "--version", "9", "--group", "eu-west",
                      "--embed-dbc", "--expires-in", "1h"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["version"] == 9 and result["kid"] == key_id(public).hex()
    envelope = (backend / "update.cose").read_bytes()
    accepted = check_update(envelope, trust, floor=3, local_config=vehicle / "config.toml",
                            dbc_store=vehicle / "store")
    digest = hashlib.sha256(DBC.read_bytes()).digest()
    assert accepted.config.sources[0].dbc == (vehicle / "store" / delivered_name(digest,
                                                                                  "ev-2027.dbc"),)
    assert accepted.update.expires_at <= time.time() + 3600

    assert ota_tools(["sign", str(backend / "update.toml"), "--key",
                      str(backend / "backend.key"), "--version", "10", "--vehicle", "car-1",
                      "--dbc", f"ev-2027.dbc={DBC}", "-o", str(tmp_path / "ref.cose")]) == 0
    referenced = (tmp_path / "ref.cose").read_bytes()
    assert len(referenced) < len(envelope) // 10  # a digest, not the file
    (vehicle / "ev-2027.dbc").write_bytes(DBC.read_bytes())
    assert check_update(referenced, trust, floor=3, local_config=vehicle / "config.toml",
                        dbc_store=vehicle / "store").config.sources[0].channel == "bus9"


def test_sign_refuses_a_missing_dbc_and_a_conflicting_version(tmp_path, capsys):
    generate_key_pair(tmp_path / "backend.key")
    (tmp_path / "update.toml").write_text(UPDATE)
    args = ["sign", str(tmp_path / "update.toml"), "--key", str(tmp_path / "backend.key"),
            "--version", "2", "--vehicle", "car-1"]
    assert ota_tools(args) == 2
    assert "--dbc ev-2027.dbc=FILE" in capsys.readouterr().err
    (tmp_path / "update.toml").write_text("version = 3\n")
    assert ota_tools(args) == 2
    assert "version = 3 but --version is 2" in capsys.readouterr().err
    (tmp_path / "update.toml").write_text("")
    args[args.index("--version") + 1] = str(2**70)
    assert ota_tools(args) == 2
    assert "from 1 to 9007199254740991" in capsys.readouterr().err
    assert not (tmp_path / "update.cose").exists()


def test_config_check_at_the_top_level_is_the_diag_check(tmp_path, capsys):
    assert edge_agent(["config", "check", str(REPO / "config.toml")]) == 0
    assert "valid" in capsys.readouterr().out
    broken = tmp_path / "broken.toml"
    broken.write_text((REPO / "config.toml").read_text().replace("window = 60.0",
                                                                 "window = 'long'"))
    assert edge_agent(["config", "check", "--json", str(broken)]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and "[batch] window" in verdict["problems"][0]
    assert edge_agent(["diag", "config", "check", "--json", str(broken)]) == 1
    assert json.loads(capsys.readouterr().out) == verdict


def test_config_reset_floor_recovers_a_vehicle_stuck_above_the_limit(tmp_path, capsys):
    """Issue #20: a vehicle that applied a trusted signer's version 2**70 (before versions
    were bounded) takes no update any more, until root resets the floor as docs/ota.md says."""
    shutil.copy(DBC, tmp_path / "vehicle.dbc")
    local = tmp_path / "config.toml"
    local.write_text(LOCAL)  # version 3, [state] directory "state", trusts backend.pub
    generate_key_pair(tmp_path / "backend.key")
    key = load_private_key(tmp_path / "backend.key")
    trust = load_trust(load_config(local))
    store = ConfigStore(tmp_path / "state")
    store.commit(signed_document(key, 2**70), 2**70)
    store.confirm()

    def offer(version: int) -> int:
        return check_update(signed(key, version=version), trust,
                            floor=max(store.highest(), 3), local_config=local,
                            dbc_store=store.dbc_directory, now=NOW).update.version

    with pytest.raises(UpdateRejected, match="edge-agent config reset-floor") as stuck:
        offer(4)
    assert stuck.value.reason is Reason.NOT_NEWER
    reset = ["config", "reset-floor", str(local), "--socket", str(tmp_path / "agent.sock")]

    agent = ControlServer(tmp_path / "agent.sock", {})  # an agent that is still running
    agent.start()
    try:
        assert edge_agent(reset) == 2
    finally:
        agent.stop()
    assert "the agent is running" in capsys.readouterr().err
    assert store.highest() == 2**70 and store.current() is not None  # untouched

    assert edge_agent([*reset, "--to", str(2**53)]) == 2
    assert "--to 9007199254740992: " in capsys.readouterr().err
    assert edge_agent(reset) == 0
    assert "floor 1180591620717411303424 -> 3" in capsys.readouterr().out
    assert (store.current(), store.previous(), store.highest()) == (None, None, 3)
    assert offer(4) == 4
    assert edge_agent([*reset, "--to", "10"]) == 0
    with pytest.raises(UpdateRejected, match="not above 10"):
        offer(10)
