"""The checks a vehicle runs on a config update: every hostile case gets its own reason."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.schema import MAX_CONFIG_VERSION, load_config, merge_update
from agent.errors import AgentError, ConfigError
from agent.ota.update import (
    CONTENT_TYPE,
    DbcEntry,
    Reason,
    Trust,
    UpdateRejected,
    check_update,
    delivered_name,
    sign_update,
    stored_config,
)
from agent.wire.cose import Signer
from tests.helpers.documents import ANY_DOCUMENT
from tests.helpers.ota_fixtures import write_local_config

REPO = Path(__file__).resolve().parents[3]
DBC = REPO / "dbc" / "vehicle.dbc"
NOW = 1_800_000_000

UPDATE = """
[[sampling.signals]]
match = "can0.ESP_VehicleSpeed.*"

[batch]
window = 10.0
"""


@pytest.fixture
def local(tmp_path) -> Path:
    return write_local_config(tmp_path)


def signed(key: Ed25519PrivateKey, *, version: int = 4, config: str = UPDATE,
           vehicle: str | None = "car-1", group: str | None = None,
           expires_at: int = NOW + 3600, dbc: dict[str, DbcEntry] | None = None) -> bytes:
    return sign_update(Signer(key, CONTENT_TYPE), version=version, config_text=config,
                       expires_at=expires_at, vehicle=vehicle, group=group, dbc=dbc,
                       issued_at=NOW)


def check(envelope: bytes, trust: Trust, local: Path, floor: int = 3):
    return check_update(envelope, trust, floor=floor, local_config=local,
                        dbc_store=local.parent / "store", now=NOW)


def rejected(envelope: bytes, trust: Trust, local: Path, floor: int = 3) -> Reason:
    with pytest.raises(UpdateRejected) as caught:
        check(envelope, trust, local, floor)
    return caught.value.reason


def test_a_good_update_lays_its_config_over_the_local_file(backend_key, trust, local):
    accepted = check(signed(backend_key), trust, local)
    config = accepted.config
    assert config.version == 4 and accepted.update.version == 4
    assert config.batch.window == 10.0
    assert [rule.match for rule in config.sampling.signals] == ["can0.ESP_VehicleSpeed.*"]
    assert config.vehicle.id == "car-1" and config.sources[0].dbc == (local.parent / "vehicle.dbc",)
    assert config.path == local.resolve()


def test_a_group_update_reaches_members_only(backend_key, trust, local):
    assert check(signed(backend_key, vehicle=None, group="eu-west"), trust, local).config
    assert rejected(signed(backend_key, vehicle=None, group="us-east"), trust,
                    local) is Reason.WRONG_TARGET


@pytest.mark.parametrize(("case", "reason"), [
    ("garbage", Reason.MALFORMED),
    ("unknown key", Reason.UNKNOWN_KEY),
    ("bad signature", Reason.BAD_SIGNATURE),
    ("tampered payload", Reason.BAD_SIGNATURE),
    ("batch content type", Reason.BAD_DOCUMENT),
    ("other vehicle", Reason.WRONG_TARGET),
    ("same version", Reason.NOT_NEWER),
    ("older version", Reason.NOT_NEWER),
    ("expired", Reason.EXPIRED),
    ("oversize", Reason.TOO_LARGE),
    ("invalid schema", Reason.INVALID_CONFIG),
    ("local-only section", Reason.INVALID_CONFIG),
    ("missing DBC digest", Reason.DBC_DIGEST_MISSING),
    ("mismatched DBC digest", Reason.DBC_MISMATCH),
    ("mismatched delivered DBC", Reason.DBC_MISMATCH),
    ("missing DBC file", Reason.DBC_MISSING),
])
def test_hostile_updates_are_rejected_with_their_reason(backend_key, trust, local, case,
                                                        reason):
    sources = ('[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "bus0"\n'
               'dbc = ["vehicle.dbc"]\n')
    digest = hashlib.sha256(DBC.read_bytes()).digest()
    good = signed(backend_key)
    envelope = {
        "garbage": lambda: b"\x00garbage\xff" * 10,
        "unknown key": lambda: signed(Ed25519PrivateKey.generate()),
        "bad signature": lambda: _with_signature(good, bytes(64)),
        "tampered payload": lambda: _with_payload(good, _payload(good).replace(
            b"window = 10.0", b"window = 99.0")),
        "batch content type": lambda: Signer(backend_key, "application/other").sign(
            _payload(good)),
        "other vehicle": lambda: signed(backend_key, vehicle="car-2"),
        "same version": lambda: signed(backend_key, version=3),
        "older version": lambda: signed(backend_key, version=2),
        "expired": lambda: signed(backend_key, expires_at=NOW - 1),
        "oversize": lambda: signed(backend_key, config=UPDATE + "#" * 1_000_001),
        "invalid schema": lambda: signed(backend_key, config="[batch]\nwindow = 'soon'\n"),
        "local-only section": lambda: signed(backend_key,
                                             config='[ota]\ntrusted_keys = ["evil.pub"]\n'),
        "missing DBC digest": lambda: signed(backend_key, config=sources),
        "mismatched DBC digest": lambda: signed(
            backend_key, config=sources, dbc={"vehicle.dbc": DbcEntry(bytes(32))}),
        "mismatched delivered DBC": lambda: signed(
            backend_key, config=sources, dbc={"vehicle.dbc": DbcEntry(digest, b"BO_ 1 X")}),
        "missing DBC file": lambda: signed(
            backend_key, config=sources.replace("vehicle.dbc", "new.dbc"),
            dbc={"new.dbc": DbcEntry(digest)}),
    }[case]()
    assert rejected(envelope, trust, local) is reason


def test_dbc_digests_that_match_pass_and_delivered_dbcs_come_from_the_store(backend_key, trust,
                                                                           local):
    content = DBC.read_bytes()
    digest = hashlib.sha256(content).digest()
    sources = ('[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "bus1"\n'
               'dbc = ["{}"]\n')
    on_vehicle = check(signed(backend_key, config=sources.format("vehicle.dbc"),
                              dbc={"vehicle.dbc": DbcEntry(digest)}), trust, local)
    assert on_vehicle.config.sources[0].dbc == (local.parent / "vehicle.dbc",)
    assert on_vehicle.config.sources[0].channel == "bus1"
    delivered = check(signed(backend_key, config=sources.format("fleet/new.dbc"),
                             dbc={"fleet/new.dbc": DbcEntry(digest, content)}), trust, local)
    assert delivered.config.sources[0].dbc == (local.parent / "store" / f"{digest.hex()}.dbc",)
    # Kept with its own suffix, which decides the loader (cantools' ARXML reader for .arxml)
    arxml = check(signed(backend_key, config=sources.format("fleet/car.ARXML"),
                         dbc={"fleet/car.ARXML": DbcEntry(digest, content)}), trust, local)
    assert arxml.config.sources[0].dbc == (local.parent / "store" / f"{digest.hex()}.arxml",)
    assert delivered_name(digest, "odd.txt") == f"{digest.hex()}.dbc"


def test_the_checks_run_in_the_documented_order(backend_key, trust, local):
    """An update wrong in every way is rejected for the first check: its target."""
    everything_wrong = signed(backend_key, vehicle="car-2", version=1, expires_at=NOW - 1,
                              config="[batch]\nwindow = 'x'\n" + "#" * 1_000_001)
    assert rejected(everything_wrong, trust, local) is Reason.WRONG_TARGET
    assert rejected(signed(backend_key, version=1, expires_at=NOW - 1), trust,
                    local) is Reason.NOT_NEWER
    assert rejected(signed(backend_key, expires_at=NOW - 1, config="#" * 1_000_001), trust,
                    local) is Reason.EXPIRED


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_fuzzed_garbage_is_rejected_never_crashes(backend_key, trust, local, data):
    with pytest.raises(UpdateRejected) as caught:
        check(data, trust, local)
    assert caught.value.reason in (Reason.MALFORMED, Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_of_a_good_update_is_rejected(backend_key, trust, local, position,
                                                       flip):
    envelope = bytearray(signed(backend_key))
    envelope[position % len(envelope)] ^= flip
    with pytest.raises(UpdateRejected):
        check(bytes(envelope), trust, local)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=ANY_DOCUMENT)
def test_signed_documents_of_any_shape_are_rejected_cleanly(backend_key, trust, local,
                                                            document):
    """Even a trusted key signing nonsense cannot crash the vehicle."""
    envelope = Signer(backend_key, CONTENT_TYPE).sign(cbor2.dumps(document))
    with pytest.raises(UpdateRejected) as caught:
        check(envelope, trust, local)
    assert caught.value.reason is Reason.BAD_DOCUMENT


def test_merge_update_tables_merge_arrays_replace(local):
    config = merge_update(local, '[uplink]\nhost = "broker.example"\n', 9, "update v9")
    assert config.uplink.host == "broker.example" and config.uplink.tls is False
    assert config.version == 9 and config.sources == load_config(local).sources
    with pytest.raises(ConfigError, match=r"update v9:3: \[batch\] window"):
        merge_update(local, "\n[batch]\nwindow = true\n", 9, "update v9")
    with pytest.raises(ConfigError, match="differs from the update's version 9"):
        merge_update(local, "version = 8\n", 9, "update v9")


def _parts(envelope: bytes) -> list:
    return cbor2.loads(envelope).value


def _payload(envelope: bytes) -> bytes:
    return _parts(envelope)[2]


def _with_payload(envelope: bytes, payload: bytes) -> bytes:
    parts = _parts(envelope)
    return cbor2.dumps(cbor2.CBORTag(18, [parts[0], parts[1], payload, parts[3]]))


def _with_signature(envelope: bytes, signature: bytes) -> bytes:
    parts = _parts(envelope)
    return cbor2.dumps(cbor2.CBORTag(18, [parts[0], parts[1], parts[2], signature]))


def test_expiry_uses_the_wall_clock_by_default(backend_key, trust, local):
    envelope = signed(backend_key, expires_at=int(time.time()) - 10)
    with pytest.raises(UpdateRejected) as caught:
        check_update(envelope, trust, floor=3, local_config=local, dbc_store=local.parent)
    assert caught.value.reason is Reason.EXPIRED


def signed_document(key: Ed25519PrivateKey, version: int) -> bytes:
    """An update signed as a trusted backend would, bypassing sign_update's own bound."""
    return Signer(key, CONTENT_TYPE).sign(cbor2.dumps({
        "type": "edge-agent-config", "version": version, "issued_at": NOW,
        "expires_at": NOW + 3600, "target": {"vehicle": "car-1"}, "config": UPDATE, "dbc": {}}))


def test_a_version_above_the_limit_is_rejected_before_it_can_raise_the_floor(backend_key,
                                                                            trust, local):
    """Issue #20: a trusted signer's 2**70 used to be applied (and sent in batches beyond
    uint64), after which every real update was not-newer."""
    with pytest.raises(UpdateRejected) as caught:
        check(signed_document(backend_key, 2**70), trust, local)
    assert caught.value.reason is Reason.BAD_DOCUMENT and caught.value.version is None
    assert f"above {MAX_CONFIG_VERSION}, the highest config version" in caught.value.message
    assert rejected(signed_document(backend_key, MAX_CONFIG_VERSION + 1), trust,
                    local) is Reason.BAD_DOCUMENT
    at_limit = check(signed_document(backend_key, MAX_CONFIG_VERSION), trust, local)
    assert at_limit.config.version == MAX_CONFIG_VERSION


def test_a_floor_at_the_limit_says_how_to_recover(backend_key, trust, local):
    with pytest.raises(UpdateRejected) as caught:
        check(signed(backend_key, version=5), trust, local, floor=2**70)
    assert caught.value.reason is Reason.NOT_NEWER
    assert "edge-agent config reset-floor" in caught.value.message
    with pytest.raises(UpdateRejected) as caught:
        check(signed(backend_key, version=5), trust, local, floor=6)
    assert "reset-floor" not in caught.value.message  # an ordinary not-newer


def test_sign_update_refuses_a_version_outside_the_limit(backend_key):
    for version in (0, MAX_CONFIG_VERSION + 1):
        with pytest.raises(AgentError, match=f"version {version}: a config version is a "
                                             "whole number from 1 to 9007199254740991"):
            signed(backend_key, version=version)


def signed_fields(key: Ed25519PrivateKey, **fields: object) -> bytes:
    """A good update document with `fields` replaced, signed by a trusted backend."""
    return Signer(key, CONTENT_TYPE).sign(cbor2.dumps({
        "type": "edge-agent-config", "version": 4, "issued_at": NOW, "expires_at": NOW + 3600,
        "target": {"vehicle": "car-1"}, "config": UPDATE, "dbc": {}, **fields}))


# Integers of 4301+ digits have no str() (Python's int-to-str limit), and the rejection of a
# version or of an expired update used to format them: ValueError instead of a rejection.
huge = st.integers(min_value=10**4300, max_value=10**5000)
beyond_int64 = st.one_of(huge, huge.map(lambda n: -n),
                         st.integers(min_value=2**63, max_value=2**200),
                         st.integers(max_value=-(2**63) - 1, min_value=-(2**200)))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["version", "issued_at", "expires_at"]), value=beyond_int64)
def test_integers_beyond_int64_in_a_signed_update_are_a_bad_document(backend_key, trust, local,
                                                                    field, value):
    """Found by fuzzing (#20): ValueError at ota.py for a 5000-digit version or expires_at."""
    envelope = signed_fields(backend_key, **{field: value})
    with pytest.raises(UpdateRejected) as caught:
        check(envelope, trust, local)
    assert caught.value.reason is Reason.BAD_DOCUMENT and str(caught.value)
    with pytest.raises(UpdateRejected) as caught:
        stored_config(envelope, trust, local_config=local, dbc_store=local.parent / "store")
    assert caught.value.reason is Reason.BAD_DOCUMENT


def test_issued_and_expiry_times_may_use_all_of_int64(backend_key, trust, local):
    accepted = check(signed_fields(backend_key, issued_at=-(2**63), expires_at=2**63 - 1),
                     trust, local)
    assert accepted.update.expires_at == 2**63 - 1
    assert rejected(signed_fields(backend_key, expires_at=-(2**63)), trust,
                    local) is Reason.EXPIRED


def test_a_dbc_name_with_a_nul_is_a_bad_document(backend_key, trust, local):
    """Found by fuzzing (#20): ValueError 'embedded null byte' from Path.resolve."""
    digest = hashlib.sha256(DBC.read_bytes()).digest()
    sources = ('[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "bus0"\n'
               'dbc = ["vehicle.dbc"]\n')
    envelope = signed_fields(backend_key, config=sources,
                             dbc={"vehicle.dbc": {"sha256": digest},
                                  "a\x00b.dbc": {"sha256": digest}})
    with pytest.raises(UpdateRejected, match=r"malformed field\(s\): dbc") as caught:
        check(envelope, trust, local)
    assert caught.value.reason is Reason.BAD_DOCUMENT
