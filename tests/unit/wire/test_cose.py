"""COSE_Sign1 verification: which key id an envelope is bound to, wherever it puts its kid."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import WireFormatError
from agent.wire.cose import HEADER_KID, BadSignatureError, Signer, verify
from agent.wire.keys import key_id

CONTENT = "application/test"


def envelope_with_kid(key: Ed25519PrivateKey, *, protected_kid: bytes | None = None,
                      unprotected_kid: bytes | None = None, payload: bytes = b"hello") -> bytes:
    """A COSE_Sign1 signed by `key` with the kid where the test puts it (the agent's Signer
    puts it in the unprotected map only)."""
    headers: dict[int, object] = {1: -8, 3: CONTENT}
    if protected_kid is not None:
        headers[HEADER_KID] = protected_kid
    protected = cbor2.dumps(headers)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    unprotected = {} if unprotected_kid is None else {HEADER_KID: unprotected_kid}
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keyring(key):
    return {key_id(key.public_key()): key.public_key()}


def test_the_verified_kid_is_the_key_that_checked_the_signature(key, keyring):
    kid = key_id(key.public_key())
    verified = verify(Signer(key, CONTENT).sign(b"hello"), keyring)
    assert (verified.kid, verified.content_type, verified.payload) == (kid, CONTENT, b"hello")
    assert verify(envelope_with_kid(key, protected_kid=kid), keyring).kid == kid


def test_a_kid_in_both_headers_is_refused_even_when_both_agree(key, keyring):
    kid = key_id(key.public_key())
    with pytest.raises(WireFormatError, match="kid in both the protected and the unprotected"):
        verify(envelope_with_kid(key, protected_kid=kid, unprotected_kid=kid), keyring)


def test_a_kid_naming_another_trusted_key_does_not_verify(key, keyring):
    other = Ed25519PrivateKey.generate()
    keyring = {**keyring, key_id(other.public_key()): other.public_key()}
    with pytest.raises(BadSignatureError):
        verify(envelope_with_kid(key, protected_kid=key_id(other.public_key())), keyring)
