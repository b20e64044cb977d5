"""Signal dictionaries for stateless workers: a shared on-disk cache, and batches on hold.

A batch names its dictionary by id (`did`, docs/wire-format.md §4.4) and carries the dictionary
itself only now and then; the vehicle also publishes it signed and retained on
`{prefix}/{vehicle}/dictionary/{did}` (§4.9). A worker takes a dictionary from whichever comes
first, checks that its id is the hash of its entries, and keeps it in memory and in a directory
that every worker of a deployment may share: one file per id holding the signed envelope it
came in, written atomically (temp file, fsync, rename) and verified again when read. A batch
whose dictionary is not known yet waits, for a bounded time, and is then given up as
undecodable with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import WireFormatError
from agent.output.batch import CONTENT_TYPE, decompress_payload
from agent.wire.body import BatchBody, SignalDef, decode_body
from agent.wire.cose import Verified, verify
from agent.wire.dictionary import (
    DICTIONARY_CONTENT_TYPE,
    check_dictionary_id,
    decode_dictionary,
)

log = logging.getLogger("fleet.dictionaries")

Dictionary = tuple[SignalDef, ...]


def open_dictionary(envelope: bytes,
                    keyring: Mapping[bytes, Ed25519PublicKey]) -> tuple[bytes, Dictionary]:
    """(did, dictionary) from a signed dictionary document, or from a batch that carries its
    dictionary; WireFormatError when the signature, the content or the id is wrong."""
    return open_verified(verify(envelope, keyring))


def open_verified(verified: Verified) -> tuple[bytes, Dictionary]:
    """open_dictionary of an envelope whose signature was checked."""
    document = decompress_payload(verified.payload)
    if verified.content_type == DICTIONARY_CONTENT_TYPE:
        return decode_dictionary(document)
    if verified.content_type == CONTENT_TYPE:
        body = decode_body(document)
        if body.dictionary is None:
            raise WireFormatError(f"batch {body.seq} carries no dictionary")
        check_dictionary_id(body.dictionary_id, body.dictionary)
        return body.dictionary_id, body.dictionary
    raise WireFormatError(f"unexpected content type {verified.content_type!r}")


class DictionaryStore:
    """Dictionaries by id: in memory, and in `directory` when given (shared by workers)."""

    def __init__(self, keyring: Mapping[bytes, Ed25519PublicKey],
                 directory: Path | None = None) -> None:
        self._keyring = keyring
        self._directory = directory
        self._known: dict[bytes, Dictionary] = {}
        # Signed dictionary documents already decoded, by the hash of their payload: a fleet
        # on one config publishes the same dictionary once per vehicle (10,000 retained
        # copies, each signed by its own vehicle), and decoding one costs far more than
        # checking its signature.
        self._payloads: dict[bytes, bytes] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def lookup(self, did: bytes) -> Dictionary | None:
        """The dictionary `did` from memory, else from the directory (verified again)."""
        known = self._known.get(did)
        if known is not None or self._directory is None:
            return known
        path = self._path(did)
        try:
            envelope = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("dictionary cache: cannot read %s: %s", path, exc)
            return None
        try:
            found, dictionary = open_dictionary(envelope, self._keyring)
        except WireFormatError as exc:
            log.warning("dictionary cache: %s is not a valid dictionary: %s", path, exc)
            return None
        if found != did:
            log.warning("dictionary cache: %s holds dictionary %s", path, found.hex())
            return None
        self._known[did] = dictionary
        return dictionary

    def add(self, did: bytes, dictionary: Dictionary, envelope: bytes) -> bool:
        """Remember a verified dictionary (`envelope` is the signed message it came in);
        False when it was already known."""
        if did in self._known:
            return False
        check_dictionary_id(did, dictionary)
        self._known[did] = dictionary
        if self._directory is not None and not self._path(did).exists():
            self._write(did, envelope)
        return True

    def add_envelope(self, envelope: bytes) -> bytes:
        """Verify and remember a signed dictionary document; its id. WireFormatError when it
        is not a valid one."""
        verified = verify(envelope, self._keyring)
        digest = hashlib.sha256(verified.content_type.encode() + b"\0" + verified.payload
                                ).digest()
        did = self._payloads.get(digest)
        if did is not None and did in self._known:
            return did
        did, dictionary = open_verified(verified)
        self.add(did, dictionary, envelope)
        self._payloads[digest] = did
        return did

    def _path(self, did: bytes) -> Path:
        assert self._directory is not None
        return self._directory / f"{did.hex()}.cose"

    def _write(self, did: bytes, envelope: bytes) -> None:
        """Temp file in the same directory, fsync, rename: a reader sees all or nothing, and
        two workers writing the same id write the same dictionary."""
        assert self._directory is not None
        try:
            descriptor, temporary = tempfile.mkstemp(prefix=f".{did.hex()}.", suffix=".tmp",
                                                     dir=self._directory)
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(envelope)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self._path(did))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("dictionary cache: cannot write %s: %s", self._path(did), exc)


@dataclass(frozen=True)
class GivenUp:
    """A batch whose dictionary did not come in time: undecodable, and why."""

    body: BatchBody
    reason: str


class HeldBatches:
    """Batches waiting for their dictionary, each for at most `bound` seconds, and at most
    `limit` of them (over it, the oldest is given up at once)."""

    def __init__(self, bound: float, limit: int = 10_000) -> None:
        self.bound = bound
        self.limit = limit
        self._held: OrderedDict[tuple[str, bytes, int], tuple[BatchBody, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, body: BatchBody, now: float) -> list[GivenUp]:
        self._held[(body.vehicle, body.boot, body.seq)] = (body, now)
        given_up = []
        while len(self._held) > self.limit:
            _, (oldest, _) = self._held.popitem(last=False)
            given_up.append(GivenUp(oldest, f"dictionary {oldest.dictionary_id.hex()} not "
                                            f"received; more than {self.limit} batches "
                                            "waiting"))
        return given_up

    def release(self, did: bytes) -> list[BatchBody]:
        """The batches that waited for `did`, in arrival order."""
        keys = [key for key, (body, _) in self._held.items() if body.dictionary_id == did]
        return [self._held.pop(key)[0] for key in keys]

    def expired(self, now: float) -> list[GivenUp]:
        given_up = []
        while self._held:
            key, (body, since) = next(iter(self._held.items()))
            if now - since < self.bound:
                break
            del self._held[key]
            given_up.append(GivenUp(body, f"dictionary {body.dictionary_id.hex()} not received "
                                          f"within {self.bound:g} s"))
        return given_up

    def give_up_all(self, reason: str) -> list[GivenUp]:
        given_up = [GivenUp(body, f"dictionary {body.dictionary_id.hex()} {reason}")
                    for body, _ in self._held.values()]
        self._held.clear()
        return given_up
