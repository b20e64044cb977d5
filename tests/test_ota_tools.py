"""The backend's signing tool and the top-level `edge-agent config check`."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from agent.cli import main as edge_agent
from agent.keys import generate_key_pair, key_id, load_public_key
from agent.ota import Trust, check_update, delivered_name
from agent.ota_tools import main as ota_tools
from tests.test_ota import LOCAL

REPO = Path(__file__).resolve().parents[1]
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
