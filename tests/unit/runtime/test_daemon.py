"""agent/runtime/daemon.py and pipeline.py: the wiring, built for real but not started (no
threads, no broker): what the pipeline is built from, what a config change keeps, and the
snapshot diagnostics read."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config.schema import BatchConfig, SamplingConfig, SignalRule
from agent.output.batch import decompress_payload
from agent.output.spool import Spool, SpooledBatch
from agent.output.uplink import Uplink
from agent.runtime.daemon import UplinkSlot, build_agent
from agent.runtime.pipeline import build_pipeline
from agent.wire.cose import verify
from agent.wire.dictionary import DICTIONARY_CONTENT_TYPE, decode_dictionary
from agent.wire.keys import generate_key_pair, key_id, load_private_key
from tests.helpers.agent_setup import BUNDLED_DRIVE
from tests.helpers.pipeline_parts import agent_config, shared_parts


@pytest.fixture
def agent(tmp_path):
    generate_key_pair(tmp_path / "vehicle.key")
    built = build_agent(agent_config(tmp_path))
    yield built
    built.parts.spool.close()


class RecordingUplink:
    def __init__(self) -> None:
        self.submitted: list[SpooledBatch] = []

    def submit(self, spooled: SpooledBatch) -> None:
        self.submitted.append(spooled)


def test_the_pipeline_is_built_on_the_shared_parts(agent):
    parts, pipeline = agent.parts, agent.pipeline

    assert [s.name for s in pipeline.sources] == ["can0"]
    assert pipeline.sources[0].health is parts.healths["can0"]
    assert pipeline.stores["can0"].health is parts.healths["can0"]
    assert [s.key for s in pipeline.plan.signals][:1] == ["can0.ESP_VehicleSpeed.VehicleSpeed"]


def test_a_closed_window_is_spooled_then_submitted(tmp_path):
    """The pipeline depends on the shared parts alone: here they are made by hand."""
    generate_key_pair(tmp_path / "vehicle.key")
    config = agent_config(tmp_path)
    spool = Spool(tmp_path / "spool.sqlite", 2**20)
    submitted = RecordingUplink()
    parts = shared_parts(tmp_path, spool, submitted.submit, ring_mb=1.0)
    pipeline = build_pipeline(config, parts, None)

    pipeline.sampler.advance(1000.0)
    pipeline.sampler.advance(1061.0)  # past the end of the first window

    (spooled,) = submitted.submitted
    assert (spooled.topic, spooled.seq, spooled.id is not None) == ("telemetry", 0, True)
    assert spool.stats().depth == 1
    spool.close()


def test_the_uplink_slot_reaches_whichever_uplink_was_put_last():
    slot, first, second = UplinkSlot(), RecordingUplink(), RecordingUplink()
    assert slot.put(first) is None
    assert slot.put(second) is first
    slot.submit("batch")  # type: ignore[arg-type]
    assert (first.submitted, second.submitted) == ([], ["batch"])


def test_batch_health_counters_name_the_config_sources_the_uplink_and_the_spool(agent):
    agent.parts.healths["can0"].frames = 7
    counters = agent.parts.health.of(["can0"])

    assert counters["can0.frames"] == 7
    assert {"uplink.acked", "uplink.refused", "spool.depth", "spool.moved_aside"} <= set(counters)
    assert not [key for key in counters if key.startswith("gone.")]


def test_a_config_change_keeps_an_unchanged_source_and_the_sequence(agent, tmp_path):
    source = agent.sources[0]
    agent.pipeline.batcher.next_seq = 5

    agent.switch(agent.prepare(agent_config(tmp_path, batch=BatchConfig(window=30.0))))

    assert agent.sources[0] is source
    assert agent.pipeline.batcher.next_seq == 5
    assert agent.snapshot().config.batch.window == 30.0


def test_a_narrower_consent_drops_what_was_spooled_under_a_wider_one(agent, tmp_path):
    agent.parts.spool.put("telemetry", agent.parts.boot, 0, b"sealed under full",
                    consent=agent.pipeline.consent.rank)

    agent.switch(agent.prepare(agent_config(tmp_path, consent="off")))

    assert agent.parts.spool.stats().depth == 0
    assert agent.snapshot().privacy.dropped_on_downgrade == 1


def test_the_snapshot_describes_each_source_as_its_type_does(agent):
    snapshot = agent.snapshot()

    (can0,) = snapshot.sources
    assert (can0.name, can0.type, can0.where, can0.value_source) == (
        "can0", "replay", str(BUNDLED_DRIVE), False)
    assert snapshot.batches.sealed == 0 and snapshot.ring.written == 0
    assert set(agent.readings()) == {"can0"}



def test_the_signed_dictionary_is_kept_retained_at_start_and_after_a_plan_change(
        tmp_path, monkeypatch):
    retained: list[tuple[str, str, bytes]] = []
    monkeypatch.setattr(Uplink, "retain", lambda self, kind, leaf, payload:
                        retained.append((kind, leaf, payload)))
    generate_key_pair(tmp_path / "vehicle.key")
    agent = build_agent(agent_config(tmp_path))
    public_key = load_private_key(tmp_path / "vehicle.key").public_key()
    try:
        first = agent.pipeline.batcher.dictionary_id
        agent.switch(agent.prepare(dataclasses.replace(agent_config(tmp_path), sampling=(
            SamplingConfig(signals=(SignalRule("can0.ESP_*"),))))))
        second = agent.pipeline.batcher.dictionary_id
        assert first != second
        assert [(kind, leaf) for kind, leaf, _ in retained] == [
            ("dictionary", f"dictionary/{did.hex()}") for did in (first, second)]
        verified = verify(retained[1][2], {key_id(public_key): public_key})
        assert verified.content_type == DICTIONARY_CONTENT_TYPE
        assert decode_dictionary(decompress_payload(verified.payload)) == (
            second, agent.pipeline.batcher.dictionary)
    finally:
        agent.parts.spool.close()


def test_flush_says_when_a_quiet_window_was_left_out(agent):
    agent.sampler.advance(1000.0)
    assert agent.flush() == "sealed the open window"  # a boot's first window is always sent
    agent.sampler.advance(1010.0)  # nothing sampled since: a parked car
    assert agent.flush() == "nothing was sampled in the open window: no batch"
    stats = agent.batcher.stats()
    assert (stats.sealed, stats.quiet) == (1, 1)
