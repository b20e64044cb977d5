"""The signal dictionary as a document of its own (docs/wire-format.md §4.9).

A vehicle publishes it signed and retained on `{prefix}/{vehicle}/dictionary/{did}`, so that a
backend worker can decode a batch whose dictionary travelled in a batch it never saw. Pure
functions; the envelope is the batches' COSE_Sign1 with its own content type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cbor2

from agent.errors import WireFormatError
from agent.wire.body import (
    SignalDef,
    byte_string,
    dictionary_from_cbor,
    dictionary_id,
    dictionary_to_cbor,
)

DICTIONARY_CONTENT_TYPE = "application/vnd.edge-agent.dictionary+cbor+zstd"
DICTIONARY_VERSION = 1


def dictionary_leaf(did: bytes) -> str:
    """The topic leaf under `{prefix}/{vehicle}/`: one retained message per dictionary id, so
    that a dictionary replaced by a config update stays readable while older batches drain."""
    return f"dictionary/{did.hex()}"


def encode_dictionary(dictionary: Sequence[SignalDef]) -> bytes:
    """The CBOR document `{"v": 1, "did": did, "dict": [...]}`: no vehicle name in it, so that
    it says nothing a pseudonymous batch would not (the id is content-addressed)."""
    return cbor2.dumps({"v": DICTIONARY_VERSION, "did": dictionary_id(dictionary),
                        "dict": dictionary_to_cbor(dictionary)})


def decode_dictionary(data: bytes) -> tuple[bytes, tuple[SignalDef, ...]]:
    """(did, dictionary) from a dictionary document; WireFormatError when it is malformed or
    its `did` is not the id of its `dict`."""
    try:
        document: Any = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise WireFormatError(f"dictionary document is not valid CBOR: {exc}") from exc
    if not isinstance(document, dict):
        raise WireFormatError("dictionary document is not a CBOR map")
    if document.get("v") != DICTIONARY_VERSION:
        raise WireFormatError(f"dictionary document version {document.get('v')!r}; "
                              f"known: {DICTIONARY_VERSION}")
    try:
        did = byte_string(document["did"], "did", 8)
        entries = dictionary_from_cbor(document["dict"])
    except WireFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WireFormatError(f"malformed dictionary document: {exc!r}") from exc
    check_dictionary_id(did, entries)
    return did, entries


def check_dictionary_id(did: bytes, dictionary: Sequence[SignalDef]) -> None:
    """WireFormatError unless `did` is the content id of `dictionary` (a cache shared by
    vehicles and workers must not take a dictionary under another's id)."""
    if dictionary_id(dictionary) != did:
        raise WireFormatError(f"dictionary id {did.hex()} is not the id of its entries "
                              f"({dictionary_id(dictionary).hex()})")
