"""Ed25519 vehicle keys: generation, loading, and the key id that names them on the wire."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.errors import KeyFileError
from agent.runtime.files import atomic_write


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """8 bytes of SHA-256 over the raw public key: stable, derivable by any backend."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


def generate_key_pair(private_path: Path, *, overwrite: bool = False) -> Path:
    """Write a new private key (mode 0600) and its public key beside it (`.pub`); each
    replaces any file of that name only once it is complete."""
    public_path = private_path.with_suffix(".pub")
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise KeyFileError(f"{private_path}: a key already exists; refusing to overwrite it "
                           "(a vehicle's key is its identity; pass --force to replace it)")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    atomic_write(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), mode=0o600)
    atomic_write(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        mode=0o644)
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__}, expected an Ed25519 key "
                           "(make one with `edge-agent keys gen`)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__}, expected an Ed25519 key")
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: {what} file not found (make one with "
                           "`edge-agent keys gen`)") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read {what} ({exc.strerror})") from exc
