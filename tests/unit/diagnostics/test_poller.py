"""The poller against simulated ECUs (can-isotp and udsoncan on both sides, a virtual bus)."""

import uuid
from pathlib import Path

import pytest
from devkit.ecu_sim import P0301, P0420, EcuBench, battery_ecu, engine_ecu

from agent.diagnostics.board import DtcBoard
from agent.diagnostics.config import DiagnosticsConfig, RequestConfig, load_catalogue
from agent.diagnostics.pids import PIDS
from agent.diagnostics.poller import PlannedRequest, Poller
from agent.diagnostics.transport import BusAddress, Connector
from agent.sources.health import SourceHealth
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until

CATALOGUE = load_catalogue(Path(__file__).parents[3] / "dbc" / "example_dids.toml")
RPM = PlannedRequest(RequestConfig("rpm", "can0", "obd_pid", pid=0x0C), PIDS[0x0C])
SPEED = PlannedRequest(RequestConfig("speed", "can0", "obd_pid", pid=0x0D,
                                     addressing="functional"), PIDS[0x0D])
CELLS = PlannedRequest(RequestConfig("cells", "can0", "read_did", did=0x0101,
                                     request_id=0x7E4, response_id=0x7EC), CATALOGUE[0x0101])
SOH = PlannedRequest(RequestConfig("soh", "can0", "read_did", did=0x0103,
                                   request_id=0x7E4, response_id=0x7EC), CATALOGUE[0x0103])
DTCS = PlannedRequest(RequestConfig("engine", "can0", "read_dtc"), None)


@pytest.fixture
def bench():
    channel = f"diag-{uuid.uuid4().hex}"
    ecus = [engine_ecu(), battery_ecu()]
    with EcuBench("virtual", channel, ecus) as bench:
        bench.channel = channel
        yield bench


def make_poller(bench, requests, **settings):
    # P2 generous: a loaded machine must not turn a slow answer into a timeout.
    settings = {"timeout": 1.0, "pending_timeout": 3.0, **settings}
    health = SourceHealth()
    poller = Poller("can0", requests, DiagnosticsConfig(**settings),
                    Connector(BusAddress("virtual", bench.channel), "python"), health,
                    board=DtcBoard())
    return poller, health


def test_pids_dids_and_trouble_codes_are_read(bench):
    poller, health = make_poller(bench, [RPM, SPEED, CELLS, SOH, DTCS])
    try:
        assert poller.ask(RPM).values == {"engine_speed": 3000.0}
        assert poller.ask(SPEED).values == {"vehicle_speed": 88.0}  # functional, 0x7DF
        cells = poller.ask(CELLS).values
        assert [cells[f"cell_voltage_{i}"] for i in range(1, 9)] == list(range(3700, 3708))
        assert cells["cell_voltage_spread"] == 7
        assert poller.ask(SOH).values == pytest.approx({"state_of_health": 94.3})
        assert poller.ask(DTCS).codes == {"P0301": 0x09, "P0420": 0x04}
    finally:
        poller.close()
    counters = health.counters()
    assert counters["requests"] == counters["responses"] == 5
    assert counters["timeouts"] == counters["negative"] == 0


def test_busy_pending_silence_and_refusal_are_each_handled_and_counted(bench):
    battery = bench.ecus["battery"]
    poller, health = make_poller(bench, [CELLS, SOH])
    try:
        battery.behaviour.busy = 1
        assert poller.ask(CELLS).error == "busy"
        battery.behaviour.pending = 2
        assert poller.ask(SOH).values == pytest.approx({"state_of_health": 94.3})
        battery.behaviour.pending = 0
        battery.behaviour.silent = True
        assert poller.ask(SOH).error == "timeout"
        battery.behaviour.silent = False
        unknown = PlannedRequest(RequestConfig("nope", "can0", "read_did", did=0x1234,
                                               request_id=0x7E4, response_id=0x7EC), None)
        assert "0x31" in poller.ask(unknown).error
    finally:
        poller.close()
    counters = health.counters()
    assert counters["busy"] == 1 and counters["negative.0x21"] == 1
    assert counters["response_pending"] == 2
    assert counters["timeouts"] == 1
    assert counters["negative.0x31"] == 1 and counters["negative"] == 2
    assert counters["requests"] == 4 and counters["responses"] == 1


def test_the_poller_emits_readings_retries_a_busy_ecu_and_only_reads(bench):
    battery, engine = bench.ecus["battery"], bench.ecus["engine"]
    battery.behaviour.busy = 2
    poller, health = make_poller(bench, [RPM, CELLS, DTCS], budget=50.0)
    with RunningSource(poller) as running:
        assert wait_until(lambda: {"engine_speed", "cell_voltage_8", "engine_dtcs"}
                          <= {r.quantity for r in list(running.readings)}, 30)
    seen = {r.quantity: r.value for r in running.readings}
    assert seen["engine_speed"] == 3000 and seen["engine_dtcs"] == 2
    assert health.counters()["busy"] == 2
    assert set(battery.received) | set(engine.received) <= {0x01, 0x22, 0x19}


def test_the_board_turns_reports_into_changes():
    from agent.diagnostics.board import DtcReport
    from agent.diagnostics.dtcs import code_name

    board = DtcBoard()
    board.report(DtcReport("engine", "can0", 1.0, {code_name(P0301): 0x09,
                                                   code_name(P0420): 0x04}))
    board.report(DtcReport("engine", "can0", 2.0, {code_name(P0420): 0x0C}))
    taken = [(at, c.code, c.change) for at, c in board.take_changes()]
    assert taken == [(1.0, "P0301", "new"), (1.0, "P0420", "new"),
                     (2.0, "P0420", "confirmed"), (2.0, "P0301", "cleared")]
    assert board.take_changes() == []


def test_an_answer_that_does_not_fit_its_item_is_counted_not_raised(bench):
    from agent.diagnostics.items import DataItem

    short = PlannedRequest(CELLS.config, DataItem("cell_voltage", size=2, count=4))
    poller, health = make_poller(bench, [short])
    try:
        answer = poller.ask(short)
    finally:
        poller.close()
    assert answer.values == {} and "expected 8 bytes, got 16" in answer.error
    assert health.counters()["decode_errors"] == 1


def test_requests_beyond_the_budget_wait_for_it(bench):
    fast = [PlannedRequest(RequestConfig(r.config.name, "can0", r.config.service,
                                         pid=r.config.pid, period=0.01), r.item)
            for r in (RPM, SPEED)]
    poller, health = make_poller(bench, fast, budget=2.0)
    with RunningSource(poller) as running:
        assert wait_until(lambda: len(running.readings) >= 6, 30)
    counters = health.counters()
    # Two a second with periods of 10 ms: after the first burst, every request waited.
    assert counters["deferred"] >= 4
    assert counters["requests"] == counters["responses"]
