"""Clears and writes: refused unless a verified signed update's own request enables them;
then sent once per config version, their outcome counted, a clear's codes reported cleared.

The enabling path is tested through the real OTA verification (agent/ota/update.py's
check_update with a throwaway Ed25519 key), the real loader, the real poller and the
simulated ECUs (can-isotp and udsoncan on both sides of a python-can virtual bus).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from devkit.ecu_sim import P0301, P0420, REPAIR_SHOP_DID, EcuBench, engine_ecu

from agent.config.schema import AgentConfig, load_config
from agent.diagnostics import control
from agent.diagnostics.board import DtcBoard
from agent.diagnostics.config import RequestConfig
from agent.diagnostics.poller import PlannedRequest, Poller
from agent.diagnostics.transport import BusAddress, Connector
from agent.diagnostics.writes import WriteLedger
from agent.errors import AgentError, ConfigError
from agent.ota.update import CONTENT_TYPE, Reason, Trust, UpdateRejected, check_update, sign_update
from agent.sources.diagnostics import SOURCE_TYPE, DiagnosticsSourceConfig, planned_requests
from agent.sources.health import SourceHealth
from agent.wire.cose import Signer
from tests.helpers.ota_fixtures import write_local_config
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until

NOW = 1_800_000_000
SID_CLEAR, SID_WRITE = 0x14, 0x2E

READ_DTCS = """
[[diagnostics.requests]]
name = "engine"
bus = "can0"
service = "read_dtc"
period = 3600.0
"""
CLEAR = """
[[diagnostics.requests]]
name = "clear_engine"
bus = "can0"
service = "clear_dtc"
allow_write = true
"""
WRITE_SHOP = f"""
[[diagnostics.requests]]
name = "shop_code"
bus = "can0"
service = "write_did"
did = {REPAIR_SHOP_DID}
data = "0A0B0C0D"
allow_write = true
"""
WRITE_VIN = """
[[diagnostics.requests]]
name = "vin"
bus = "can0"
service = "write_did"
did = 0xF190
data = "00"
allow_write = true
"""


@pytest.fixture
def channel() -> str:
    return f"writes-{uuid.uuid4().hex}"


@pytest.fixture
def local(tmp_path, channel) -> Path:
    return write_local_config(tmp_path, channel)


def applied(key: Ed25519PrivateKey, trust: Trust, local: Path, text: str,
            version: int = 4) -> AgentConfig:
    envelope = sign_update(Signer(key, CONTENT_TYPE), version=version, config_text=text,
                           expires_at=NOW + 3600, vehicle="car-1", issued_at=NOW)
    return check_update(envelope, trust, floor=3, local_config=local,
                        dbc_store=local.parent / "store", now=NOW).config


def diag_source(config: AgentConfig) -> DiagnosticsSourceConfig:
    found = [s for s in config.sources if isinstance(s, DiagnosticsSourceConfig)]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("text", [CLEAR, WRITE_SHOP])
def test_a_local_config_never_enables_a_clear_or_a_write(local, text):
    local.write_text(local.read_text() + READ_DTCS + text)
    with pytest.raises(ConfigError, match=r"config\.toml:\d+: .*allow_write needs a signed "
                                          "OTA config"):
        load_config(local)


def test_a_signed_update_enables_exactly_its_named_requests(backend_key, trust, local):
    config = applied(backend_key, trust, local, READ_DTCS + CLEAR + WRITE_SHOP)
    requests = {r.name: r for r in diag_source(config).settings.requests}
    assert [name for name, r in requests.items() if r.writes] == ["clear_engine", "shop_code"]
    assert requests["clear_engine"].allow_write and not requests["engine"].allow_write

    # A read-only bus's source is the same across versions (it goes on through an update).
    reads_only = diag_source(applied(backend_key, trust, local, READ_DTCS, version=5))
    assert reads_only.version == 0
    assert reads_only == diag_source(applied(backend_key, trust, local, READ_DTCS, version=6))

    without_opt_in = WRITE_SHOP.replace("allow_write = true\n", "")
    with pytest.raises(UpdateRejected, match="unless the request sets allow_write") as caught:
        applied(backend_key, trust, local, READ_DTCS + CLEAR + without_opt_in)
    assert caught.value.reason is Reason.INVALID_CONFIG

    routine = CLEAR.replace("clear_dtc", "routine").replace("clear_engine", "r")
    with pytest.raises(UpdateRejected, match="only clear_dtc and write_did can be enabled"):
        applied(backend_key, trust, local, READ_DTCS + routine)


def test_local_requests_under_a_signed_update_stay_refused(backend_key, trust, local):
    # The update signs only [batch]: the requests are still the local file's, and a
    # signature over something else must not lend them its trust.
    local.write_text(local.read_text() + READ_DTCS + CLEAR)
    with pytest.raises(UpdateRejected, match="needs a signed OTA config") as caught:
        applied(backend_key, trust, local, "[batch]\nwindow = 10.0\n")
    assert caught.value.reason is Reason.INVALID_CONFIG


def test_a_diagnostics_source_cannot_be_written_by_hand(local):
    local.write_text(local.read_text() + '\n[[sources]]\nname = "d"\ntype = "diagnostics"\n'
                     'bus = "can0"\n')
    with pytest.raises(ConfigError, match="not written as"):
        load_config(local)


def run_poller(source: DiagnosticsSourceConfig, channel: str, board: DtcBoard,
               ledger: WriteLedger, until) -> SourceHealth:
    """The source's poller (as DiagnosticsSource.run builds it, without the ignition
    watch) until `until(board, health)` holds."""
    health = SourceHealth()
    poller = Poller(source.bus, planned_requests(source), source.settings,
                    Connector(BusAddress("virtual", channel), "python"), health,
                    board=board, ledger=ledger)
    with RunningSource(poller):
        assert wait_until(lambda: until(board, health))
    return health


def test_an_enabled_clear_is_sent_once_per_version_and_reported_cleared(
        backend_key, trust, local, channel):
    config = applied(backend_key, trust, local, READ_DTCS + CLEAR + WRITE_SHOP + WRITE_VIN)
    source = diag_source(config)
    assert source.version == 4
    changes: list[tuple[str, str]] = []

    def cleared(board: DtcBoard, health: SourceHealth) -> bool:
        changes.extend((c.code, c.change) for _, c in board.take_changes())
        return {("P0301", "cleared"), ("P0420", "cleared")} <= set(changes) \
            and health.state["writes"] == 3

    with EcuBench("virtual", channel, [engine_ecu()]) as bench:
        engine = bench.ecus["engine"]
        ledger = WriteLedger(config.state.directory, source.version)
        health = run_poller(source, channel, DtcBoard(), ledger, cleared)
        assert engine.data.dtcs == {}
        assert engine.data.dids[REPAIR_SHOP_DID] == bytes.fromhex("0A0B0C0D")
        assert engine.received.count(SID_CLEAR) == 1
        assert engine.received.count(SID_WRITE) == 2  # the shop code, and the refused VIN
        counters = health.counters()
        assert (counters["writes_positive"], counters["writes_negative"]) == (2, 1)
        assert counters["negative.0x31"] == 1  # the VIN is not writable: refused, counted
        warnings = SOURCE_TYPE.warnings({"name": "can0.diag", "last_failure": "",
                                         **counters})
        assert any("2 done, 1 refused by the ECU, 0 unanswered" in w for w in warnings)
        assert ("P0301", "new") in changes  # the read before the clear saw them

        # Restarted on the same version (a reload, a restart): read, never cleared again.
        engine.set_dtcs({P0301: 0x09, P0420: 0x04})
        restarted = WriteLedger(config.state.directory, source.version)
        assert not restarted.due("clear_engine") and not restarted.due("vin")
        health = run_poller(source, channel, DtcBoard(), restarted,
                            lambda board, health: board.reports())
        assert health.counters()["writes"] == 0
        assert engine.received.count(SID_CLEAR) == 1 and engine.received.count(SID_WRITE) == 2
        assert set(engine.data.dtcs) == {P0301, P0420}

    # A newer signed version that keeps the request sends it again; a rollback does not.
    assert WriteLedger(config.state.directory, 5).due("clear_engine")
    assert not WriteLedger(config.state.directory, 3).due("clear_engine")


def test_a_damaged_ledger_sends_nothing(tmp_path):
    ledger = WriteLedger(tmp_path, 7)
    assert ledger.due("clear_engine")
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "diagnostics" / "writes.json").write_text("{not json")
    assert not ledger.due("clear_engine")


def test_diag_commands_never_clear_or_write(local, channel):
    """`diag request` (the control socket's one-off) only reads, whatever it is handed."""
    local.write_text(local.read_text() + READ_DTCS)
    source = diag_source(load_config(local))
    clear = PlannedRequest(RequestConfig("x", "can0", "clear_dtc", allow_write=True), None)
    with EcuBench("virtual", channel, [engine_ecu()]) as bench:
        engine, board = bench.ecus["engine"], DtcBoard()
        answers: list[dict] = []

        def asked(board: DtcBoard, health: SourceHealth) -> bool:
            poller = board.poller("can0")
            if poller is None:
                return False
            with pytest.raises(AgentError, match="only reads"):
                poller.submit(clear)
            answers.append(control.one_off({"bus": "can0", "did": REPAIR_SHOP_DID,
                                            "service": "write_did", "data": "FF"}, board))
            return True

        run_poller(source, channel, board, WriteLedger(local.parent, 4), asked)
        # Asked as a read of the DID (0x22): the write's keys are not even looked at.
        assert (answers[0]["service"], answers[0]["raw"]) == ("read_did", "00000000")
        assert not {SID_CLEAR, SID_WRITE} & set(engine.received)
        assert engine.data.dids[REPAIR_SHOP_DID] == bytes(4)
