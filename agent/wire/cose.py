"""COSE_Sign1 (RFC 9052) with EdDSA over Ed25519: the envelope of every batch.

Protected header: {1 (alg): -8 (EdDSA), 3 (content type): CONTENT_TYPE}; unprotected header:
{4 (kid): key id}. The signature covers Sig_structure ["Signature1", protected, b"", payload].
A verifier also takes the kid from the protected header, never from both: `Verified.kid` is the
one key id whose public key checked the signature, and the only kid anything may trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import WireFormatError
from agent.wire.keys import key_id

COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HEADER_ALG = 1
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4


class UnknownKeyError(WireFormatError):
    """The envelope names a key id that is not in the keyring."""


class BadSignatureError(WireFormatError):
    """The signature does not verify with the key the envelope names."""


@dataclass(frozen=True)
class Verified:
    kid: bytes
    content_type: str
    payload: bytes


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey, content_type: str) -> None:
        self._key = private_key
        self.kid = key_id(private_key.public_key())
        self._protected = cbor2.dumps({HEADER_ALG: ALG_EDDSA, HEADER_CONTENT_TYPE: content_type})

    def for_content(self, content_type: str) -> Signer:
        """The same key, for documents of another content type (events)."""
        return Signer(self._key, content_type)

    def sign(self, payload: bytes) -> bytes:
        signature = self._key.sign(_sig_structure(self._protected, payload))
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [
            self._protected, {HEADER_KID: self.kid}, payload, signature]))


def verify(envelope: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> Verified:
    """Check the envelope's signature against the key its kid names; raise WireFormatError."""
    try:
        tagged = cbor2.loads(envelope)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise WireFormatError(f"not a CBOR document: {exc}") from exc
    if not isinstance(tagged, cbor2.CBORTag) or tagged.tag != COSE_SIGN1_TAG:
        raise WireFormatError("not a COSE_Sign1 message (CBOR tag 18 missing)")
    value = tagged.value
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise WireFormatError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = value
    if not all(isinstance(v, bytes) for v in (protected, payload, signature)) or not isinstance(
            unprotected, Mapping):
        raise WireFormatError("COSE_Sign1 items have the wrong types")
    try:
        headers = cbor2.loads(protected) if protected else {}
    except Exception as exc:
        raise WireFormatError(f"protected header is not CBOR: {exc}") from exc
    if not isinstance(headers, Mapping) or headers.get(HEADER_ALG) != ALG_EDDSA:
        raise WireFormatError("unsupported algorithm: only EdDSA (-8) is accepted")
    if HEADER_KID in unprotected and HEADER_KID in headers:
        # RFC 9052 §3: a label appears in one bucket only. Two kids would let one reader
        # verify with one key while another reader binds the envelope to the other.
        raise WireFormatError("kid in both the protected and the unprotected header: a "
                              "sender puts it in one of them")
    kid = unprotected.get(HEADER_KID, headers.get(HEADER_KID))
    if not isinstance(kid, bytes):
        raise WireFormatError("no key id (kid) in the envelope")
    public_key = keys.get(kid)
    if public_key is None:
        raise UnknownKeyError(f"unknown key id {kid.hex()}: no public key for this vehicle")
    try:
        public_key.verify(signature, _sig_structure(protected, payload))
    except InvalidSignature as exc:
        raise BadSignatureError(f"signature does not verify with key {kid.hex()}: the batch "
                              "was altered or signed by another key") from exc
    return Verified(kid=kid, content_type=_content_type(headers.get(HEADER_CONTENT_TYPE, "")),
                    payload=payload)


def _content_type(value: object) -> str:
    """The content type header as text: a text string, or a CoAP Content-Format number
    (0..65535, RFC 9052 §3.1), which no reader here expects but may name in its rejection."""
    if isinstance(value, str):
        return value
    if type(value) is int and 0 <= value <= 0xFFFF:
        return str(value)
    raise WireFormatError("content type (header 3) must be a text string or a CoAP "
                          "Content-Format number (0..65535)")


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])
