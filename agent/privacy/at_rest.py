"""Spooled data sealed at rest, with one key per consent level, so that it can be destroyed.

Every batch and event waiting in the spool is encrypted with ChaCha20-Poly1305 under the key
of the consent level it was sealed under (`spool-<level>.key`, 32 random bytes, 0600, in the
0700 state folder). A consent downgrade destroys the keys of the levels above the new one and
`edge-agent privacy erase` destroys them all: what was sealed under them is then unreadable
wherever a copy of it survives (freed SQLite pages, the WAL, a journal, blocks of an SD card
that wear levelling has not yet reused, a stolen card). The keys live beside the data, so
this does not protect a card taken while the keys are still there; it makes a decision to
withdraw data final.

ChaCha20-Poly1305 rather than AES-GCM: a Raspberry Pi 4 (Cortex-A72) has no AES instructions,
where ChaCha20 runs about three times faster in software. A random 96-bit nonce per row is
safe for far more rows than a key ever seals (2^32 with a collision chance of 2^-33).
The associated data binds a row to its consent rank, topic, boot and sequence number: a row
cannot be moved to another rank, or its ciphertext into another row, without failing to open.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.config.schema import CONSENT_LEVELS
from agent.runtime.files import atomic_write, destroy, private_folder

log = logging.getLogger(__name__)

NONCE_BYTES = 12
KEY_BYTES = 32
# A sealed row: FORMAT, nonce, ciphertext with its 16-byte tag. The format byte lets a later
# version change the cipher and still read what an older one spooled.
FORMAT = b"\x01"
SEAL_OVERHEAD = len(FORMAT) + NONCE_BYTES + 16


class Unreadable(Exception):
    """A sealed row whose key was destroyed (or that was tampered with)."""


def key_path(directory: Path, rank: int) -> Path:
    return directory / f"spool-{CONSENT_LEVELS[rank]}.key"


def associated_data(rank: int, topic: str, boot: bytes, seq: int) -> bytes:
    return b"edge-agent spool\0%d\0%s\0%s\0%d" % (rank, topic.encode(), boot.hex().encode(),
                                                   seq)


class AtRest:
    """The keys of the state folder `directory`: each is made the first time its consent
    level seals something, kept in memory from then on, and destroyed on request."""

    def __init__(self, directory: Path) -> None:
        self.directory = private_folder(directory)
        self._ciphers: dict[int, ChaCha20Poly1305] = {}
        self._lock = threading.Lock()

    def seal(self, rank: int, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._cipher(rank, create=True).encrypt(nonce, plaintext,
                                                                         associated)

    def open(self, rank: int, sealed: bytes, associated: bytes) -> bytes:
        if sealed[:1] != FORMAT:
            raise Unreadable(f"unknown at-rest format {sealed[:1].hex()!r}")
        cipher = self._cipher(rank, create=False)
        if cipher is None:
            raise Unreadable(f"the {CONSENT_LEVELS[rank]} key was destroyed")
        nonce, ciphertext = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, ciphertext, associated)
        except InvalidTag:
            raise Unreadable(f"not sealed under the current {CONSENT_LEVELS[rank]} key (it "
                             "was destroyed and made anew, or the row was altered)") from None

    def forget_above(self, rank: int) -> list[str]:
        """Destroy the keys of the consent levels above `rank` (-1: all); the levels whose key
        was on disk or in memory."""
        destroyed = []
        with self._lock:
            for level_rank in range(rank + 1, len(CONSENT_LEVELS)):
                in_memory = self._ciphers.pop(level_rank, None) is not None
                if destroy(key_path(self.directory, level_rank)) or in_memory:
                    destroyed.append(CONSENT_LEVELS[level_rank])
        if destroyed:
            log.warning("at rest: destroyed the spool keys of %s: what was sealed under them "
                        "is unreadable now", ", ".join(destroyed))
        return destroyed

    def _cipher(self, rank: int, *, create: bool) -> ChaCha20Poly1305 | None:
        with self._lock:
            cipher = self._ciphers.get(rank)
            if cipher is not None:
                return cipher
            path = key_path(self.directory, rank)
            try:
                key = path.read_bytes()
            except FileNotFoundError:
                key = b""
            if len(key) != KEY_BYTES:
                if not create:
                    return None
                if key:  # damaged: it opens nothing, so replacing it loses nothing more
                    log.error("at rest: %s holds %d bytes, not %d: replaced", path, len(key),
                              KEY_BYTES)
                key = ChaCha20Poly1305.generate_key()
                atomic_write(path, key, mode=0o600)
            cipher = self._ciphers[rank] = ChaCha20Poly1305(key)
            return cipher
