"""Fixtures of the unit tests that verify signed config updates: tests/unit/ota, and the clears
and writes such an update enables (tests/unit/diagnostics)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.ota.update import Trust
from agent.wire.keys import key_id


@pytest.fixture(scope="module")
def backend_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trust(backend_key) -> Trust:
    """What car-1 in group eu-west trusts: updates signed with `backend_key`, up to 1 MB."""
    public = backend_key.public_key()
    return Trust(keys={key_id(public): public}, vehicle="car-1",
                 groups=frozenset({"eu-west"}), max_bytes=1_000_000)
