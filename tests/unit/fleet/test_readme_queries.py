"""The README's path from `tools/demo --workdir demo-run` to a DuckDB query: its commands,
read from the README itself, run on a data set shaped like the demo's (the demo vehicle, the
bundled DBC's signals, the agent's own batches and an event, written by the backend's own
writer), and the demo prints the same commands."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from devkit.demo import VEHICLE, query_commands
from fleet.backend import Backend, main
from fleet.dataset import DatasetWriter

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.events.codec import EVENT_CONTENT_TYPE, EventBody, encode_event
from agent.output.batch import CONTENT_TYPE, Batcher, BatchIdentity
from agent.sampling.plan import build_plan
from agent.sampling.ring import Field, Ring
from agent.wire.cose import Signer
from agent.wire.keys import key_id

REPO = Path(__file__).resolve().parents[3]
SECTION = "### From the demo to a DuckDB query"


def readme_commands() -> tuple[list[str], list[str]]:
    """The section's `tools/backend query` lines and its `python -c` lines."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", 1)]
    lines = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
             for line in block.splitlines()]
    queries = [line.split("  #")[0].strip() for line in lines
               if line.startswith("tools/backend query")]
    python = [line for line in lines if line.startswith(".venv/bin/python -c")]
    return queries, python


@pytest.fixture
def demo_run(tmp_path, monkeypatch):
    """`demo-run/dataset` in the current folder, as `tools/demo --workdir demo-run` leaves it."""
    key = Ed25519PrivateKey.generate()
    database = load_dbc([REPO / "dbc" / "vehicle.dbc"]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.VCU_Status.*"),
        SignalRule("can0.ESP_VehicleSpeed.VehicleSpeed", mode="stats"))), {"can0": database})
    ring = Ring(10_000)
    batcher = Batcher(plan, ring, BatchIdentity(
        vehicle=VEHICLE, boot=bytes(16), config_version=1, dbc_digest=bytes(32),
        clock=lambda: "ntp"), Signer(key, CONTENT_TYPE), dict)
    backend = Backend({key_id(key.public_key()): key.public_key()})
    writer = DatasetWriter(tmp_path / "demo-run" / "dataset", "demo")
    for seq in range(3):
        t0 = 1_780_000_000_000 + seq * 10_000
        for tick in range(10):
            for signal in plan.signals:
                at = t0 + tick * 1000
                if signal.mode == "stats":
                    for field, value in ((Field.MIN, 100), (Field.MAX, 300),
                                         (Field.SUM, 2000), (Field.COUNT, 10)):
                        ring.append(at, signal.index, field, value)
                else:
                    ring.append(at, signal.index, Field.VALUE, 3 if "Gear" in signal.key else 1)
        body = backend.receive(batcher.seal(t0, t0 + 10_000).envelope).body
        writer.add_received(body)
        for ready in backend.admit(body, 0.0):
            writer.add_samples(ready, backend.dictionaries.lookup(ready.dictionary_id))
    event = EventBody(vehicle=VEHICLE, boot=bytes(16), seq=0, type="stop",
                      time_ms=1_780_000_005_000, clock="ntp", config_version=1,
                      privacy={"consent": "full", "ver": 1}, data={"seconds": 42}, positions={})
    writer.add_event(backend.receive_event(
        Signer(key, EVENT_CONTENT_TYPE).sign(encode_event(event))).event)
    writer.flush()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_queries_answer_on_the_demo_data_set(demo_run, capsys):
    queries, _ = readme_commands()
    assert len(queries) >= 4
    for line in queries:
        assert main(shlex.split(line)[1:]) == 0, line
        out = capsys.readouterr().out
        assert out.strip() and "(nothing stored)" not in out, line
    assert main(["query", "demo-run/dataset", "last", "--signal",
                 "can0.VCU_Status.Gear"]) == 0
    assert " D " in capsys.readouterr().out  # Gear 3 is "D" in the DBC's value table


def test_the_readme_sql_runs_with_the_venvs_duckdb(demo_run):
    _, python = readme_commands()
    assert python
    for line in python:
        code = shlex.split(line)[2]
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=demo_run, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "can0." in run.stdout


def test_the_demo_prints_the_readme_queries():
    queries, _ = readme_commands()
    assert query_commands(Path("demo-run/dataset")) == queries[:4]
