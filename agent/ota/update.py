"""Signed config updates: the document a backend signs, and the checks a vehicle runs on it.

An update is a COSE_Sign1 envelope (agent/wire/cose.py, Ed25519) with content type CONTENT_TYPE
around a CBOR map (docs/ota.md):

    {"type": "edge-agent-config", "version": 7, "issued_at": 1767225600,
     "expires_at": 1767830400, "target": {"vehicle": "demo-0001"} | {"group": "eu-west"},
     "config": "<TOML laid over the local config.toml>",
     "dbc": {"dbc/vehicle.dbc": {"sha256": h'..32 bytes..', "content": h'..' (optional)}}}

`check_update` runs the checks in a fixed order and stops at the first failure, which it
reports as an `UpdateRejected` with one reason code per check. Nothing here writes anything.
"""

from __future__ import annotations

import hashlib
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config.schema import MAX_CONFIG_VERSION, AgentConfig, merge_update
from agent.decoding.dbc import FORMATS
from agent.errors import AgentError, ConfigError, WireFormatError
from agent.wire.body import shown
from agent.wire.cose import BadSignatureError, Signer, UnknownKeyError, Verified, verify
from agent.wire.keys import key_id, load_public_key

CONTENT_TYPE = "application/vnd.edge-agent.config+cbor"
DOCUMENT_TYPE = "edge-agent-config"
# Read before any parsing, whatever [ota] max_bytes says: no update is this large.
TRANSPORT_CEILING = 16 * 1024 * 1024
# issued_at and expires_at are int64 Unix seconds (docs/ota.md): a time any reader can store
# and compare, and a message can print (an integer of thousands of digits has no str()).
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class Reason(StrEnum):
    """Why an update was not applied; the order of the checks is the order below."""

    MALFORMED = "malformed"                    # not a COSE_Sign1 envelope
    UNKNOWN_KEY = "unknown-key"                # signed with a key this vehicle does not pin
    BAD_SIGNATURE = "bad-signature"            # altered, or signed by another key
    BAD_DOCUMENT = "bad-document"              # signed, but not a config update document
    WRONG_TARGET = "wrong-target"              # for another vehicle or group
    NOT_NEWER = "not-newer"                    # version not above the highest applied
    EXPIRED = "expired"
    TOO_LARGE = "too-large"
    INVALID_CONFIG = "invalid-config"          # the same validation as config.toml
    DBC_DIGEST_MISSING = "dbc-digest-missing"  # a DBC the config uses has no digest
    DBC_MISSING = "dbc-missing"                # neither on the vehicle nor in the update
    DBC_MISMATCH = "dbc-mismatch"              # content differs from the signed digest
    UNUSABLE = "unusable"                      # valid, but the pipeline cannot be built
    RUNTIME_FAILURE = "runtime-failure"        # applied, failed its health watch: rolled back


class UpdateRejected(AgentError):
    def __init__(self, reason: Reason, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.version = version


@dataclass(frozen=True)
class DbcEntry:
    sha256: bytes
    content: bytes | None = None


@dataclass(frozen=True)
class ConfigUpdate:
    """A signed update whose signature verified; fields as in the document."""

    version: int
    issued_at: int
    expires_at: int
    target_vehicle: str | None
    target_group: str | None
    config_text: str
    dbc: Mapping[str, DbcEntry]
    kid: bytes
    envelope: bytes

    @property
    def target(self) -> str:
        return (f"vehicle {self.target_vehicle}" if self.target_vehicle is not None
                else f"group {self.target_group}")


@dataclass(frozen=True)
class Trust:
    """What a vehicle checks updates against."""

    keys: Mapping[bytes, Ed25519PublicKey]
    vehicle: str
    groups: frozenset[str]
    max_bytes: int


@dataclass(frozen=True)
class Accepted:
    update: ConfigUpdate
    config: AgentConfig


def load_trust(config: AgentConfig) -> Trust:
    """The pinned backend keys of `[ota] trusted_keys`, by key id (KeyFileError if unreadable)."""
    keys = {key_id(key): key for key in map(load_public_key, config.ota.trusted_keys)}
    return Trust(keys=keys, vehicle=config.vehicle.id, groups=frozenset(config.vehicle.groups),
                 max_bytes=config.ota.max_bytes)


def sign_update(signer: Signer, *, version: int, config_text: str, expires_at: int,
                vehicle: str | None = None, group: str | None = None,
                dbc: Mapping[str, DbcEntry] | None = None,
                issued_at: int | None = None) -> bytes:
    """The backend side: a signed update for one vehicle or one group."""
    if (vehicle is None) == (group is None):
        raise AgentError("an update targets exactly one vehicle or one group")
    if not 1 <= version <= MAX_CONFIG_VERSION:
        raise AgentError(f"version {version}: a config version is a whole number from 1 to "
                         f"{MAX_CONFIG_VERSION} (2**53 - 1); vehicles reject any other")
    document = {
        "type": DOCUMENT_TYPE, "version": version,
        "issued_at": int(time.time()) if issued_at is None else issued_at,
        "expires_at": expires_at,
        "target": {"vehicle": vehicle} if vehicle is not None else {"group": group},
        "config": config_text,
        "dbc": {name: ({"sha256": entry.sha256} if entry.content is None
                       else {"sha256": entry.sha256, "content": entry.content})
                for name, entry in (dbc or {}).items()},
    }
    return signer.sign(cbor2.dumps(document))


def open_update(envelope: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> ConfigUpdate:
    """Signature, key id and document shape (the first checks, also used at start-up)."""
    verified = open_signed(envelope, keys, CONTENT_TYPE, TRANSPORT_CEILING)
    return _parse_document(verified.payload, verified.kid, envelope)


def open_signed(envelope: bytes, keys: Mapping[bytes, Ed25519PublicKey], content_type: str,
                ceiling: int) -> Verified:
    """The checks every signed backend command shares (config updates, fetch requests:
    agent/events/fetch.py): size ceiling, pinned key, signature, content type."""
    if len(envelope) > ceiling:
        raise UpdateRejected(Reason.TOO_LARGE, f"{len(envelope)} bytes is above the "
                             f"{ceiling}-byte ceiling")
    try:
        verified = verify(envelope, keys)
    except UnknownKeyError as exc:
        raise UpdateRejected(Reason.UNKNOWN_KEY, f"{exc}: pin it in [ota] trusted_keys") \
            from exc
    except BadSignatureError as exc:
        raise UpdateRejected(Reason.BAD_SIGNATURE, str(exc)) from exc
    except WireFormatError as exc:
        raise UpdateRejected(Reason.MALFORMED, str(exc)) from exc
    if verified.content_type != content_type:
        raise UpdateRejected(Reason.BAD_DOCUMENT, f"content type {verified.content_type!r} "
                             f"is not {content_type!r}")
    return verified


def check_update(envelope: bytes, trust: Trust, *, floor: int, local_config: Path,
                 dbc_store: Path, now: float | None = None) -> Accepted:
    """Every check, in order; the config it yields uses delivered DBCs from `dbc_store`."""
    update = open_update(envelope, trust.keys)
    version = update.version
    _check_target(update, trust)
    if version <= floor:
        # No update can pass a floor at the limit: say how the vehicle gets out of it.
        stuck = (f"; {floor} is at or above the limit {MAX_CONFIG_VERSION}, so no update can "
                 "ever be newer: reset the floor on the vehicle with `edge-agent config "
                 "reset-floor` (docs/ota.md)" if floor >= MAX_CONFIG_VERSION else "")
        raise UpdateRejected(Reason.NOT_NEWER, f"version {version} is not above {floor}, the "
                             "highest applied (older updates are never re-applied)" + stuck,
                             version)
    now = time.time() if now is None else now
    if update.expires_at <= now:
        raise UpdateRejected(Reason.EXPIRED, f"expired at {update.expires_at} (now "
                             f"{int(now)})", version)
    if len(envelope) > trust.max_bytes:
        raise UpdateRejected(Reason.TOO_LARGE, f"{len(envelope)} bytes; [ota] max_bytes is "
                             f"{trust.max_bytes}", version)
    config = config_of(update, local_config)
    return Accepted(update, with_dbc_files(config, update, local_config, dbc_store))


def stored_config(envelope: bytes, trust: Trust, *, local_config: Path,
                  dbc_store: Path) -> AgentConfig:
    """The config of an update applied before: signature, target, schema and DBCs again
    (the key may have been unpinned, the local file edited); not its version or expiry."""
    update = open_update(envelope, trust.keys)
    _check_target(update, trust)
    return with_dbc_files(config_of(update, local_config), update, local_config, dbc_store)


def _check_target(update: ConfigUpdate, trust: Trust) -> None:
    if not (update.target_vehicle == trust.vehicle or update.target_group in trust.groups):
        raise UpdateRejected(Reason.WRONG_TARGET, f"update for {update.target}; this is "
                             f"vehicle {trust.vehicle} in groups {sorted(trust.groups)}",
                             update.version)


def config_of(update: ConfigUpdate, local_config: Path) -> AgentConfig:
    try:
        # Only reached with an update whose signature open_update verified.
        return merge_update(local_config, update.config_text, update.version,
                            f"update v{update.version}", signed=True)
    except ConfigError as exc:
        raise UpdateRejected(Reason.INVALID_CONFIG, str(exc), update.version) from exc


def with_dbc_files(config: AgentConfig, update: ConfigUpdate, local_config: Path,
                   dbc_store: Path) -> AgentConfig:
    """Check every DBC the update's sources name against its signed digest; DBCs delivered
    in the update are used from `dbc_store` (by digest), the others from the vehicle."""
    if "sources" not in tomllib.loads(update.config_text):  # parsed by config_of already
        return config
    base = local_config.resolve().parent
    named = {(base / name).resolve(): name for name in update.dbc}
    sources = []
    for source in config.sources:
        paths = []
        for path in source.dbc:
            name = named.get(path.resolve())
            if name is None:
                raise UpdateRejected(Reason.DBC_DIGEST_MISSING, f"source {source.name}: "
                                     f"{path} has no SHA-256 digest in the update",
                                     update.version)
            entry = update.dbc[name]
            if entry.content is not None:
                if hashlib.sha256(entry.content).digest() != entry.sha256:
                    raise UpdateRejected(Reason.DBC_MISMATCH, f"{name}: the delivered content "
                                         "does not match its digest", update.version)
                paths.append(dbc_store / delivered_name(entry.sha256, name))
                continue
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise UpdateRejected(Reason.DBC_MISSING, f"{path}: not on this vehicle "
                                     f"({exc.strerror}) and not delivered in the update",
                                     update.version) from exc
            if hashlib.sha256(content).digest() != entry.sha256:
                raise UpdateRejected(Reason.DBC_MISMATCH, f"{path}: SHA-256 "
                                     f"{hashlib.sha256(content).hexdigest()[:16]}… differs "
                                     f"from the update's {entry.sha256.hex()[:16]}…",
                                     update.version)
            paths.append(path)
        sources.append(replace(source, dbc=tuple(paths)))
    return replace(config, sources=tuple(sources))


def delivered_name(sha256: bytes, name: str) -> str:
    """Where a delivered database is kept: named by its digest, with its own suffix (the
    loader picks cantools' DBC, ARXML, KCD or SYM reader by it)."""
    suffix = PurePosixPath(name).suffix.lower()
    return f"{sha256.hex()}{suffix if suffix in FORMATS else '.dbc'}"


def _parse_document(payload: bytes, kid: bytes, envelope: bytes) -> ConfigUpdate:
    try:
        document = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on malformed input
        raise UpdateRejected(Reason.BAD_DOCUMENT, f"payload is not CBOR: {exc}") from exc
    if not isinstance(document, Mapping) or document.get("type") != DOCUMENT_TYPE:
        raise UpdateRejected(Reason.BAD_DOCUMENT, f"payload is not an {DOCUMENT_TYPE} "
                             "document")
    version = document.get("version")
    if not is_int(version) or version < 1:
        raise UpdateRejected(Reason.BAD_DOCUMENT, "version must be a positive integer")
    if version > MAX_CONFIG_VERSION:
        # Before the floor is compared: applied, it would make every later update not-newer.
        # The ack leaves the version out (null): it does not fit what readers of acks expect.
        raise UpdateRejected(Reason.BAD_DOCUMENT, f"version ({shown(version)}) is above "
                             f"{MAX_CONFIG_VERSION}, the highest config version (2**53 - 1)")
    target = document.get("target")
    dbc = document.get("dbc", {})
    problems = [name for name, ok in (
        ("issued_at", is_int64(document.get("issued_at"))),
        ("expires_at", is_int64(document.get("expires_at"))),
        ("config", isinstance(document.get("config"), str)),
        ("target", isinstance(target, Mapping) and len(target) == 1
         and set(target) <= {"vehicle", "group"}
         and all(isinstance(v, str) for v in target.values())),
        # A NUL in a name would reach the file system (Path.resolve raises on it).
        ("dbc", isinstance(dbc, Mapping) and all(
            isinstance(k, str) and "\0" not in k and _is_dbc_entry(v) for k, v in dbc.items())),
    ) if not ok]
    if problems:
        raise UpdateRejected(Reason.BAD_DOCUMENT, f"malformed field(s): {', '.join(problems)}",
                             version)
    return ConfigUpdate(
        version=version, issued_at=document["issued_at"], expires_at=document["expires_at"],
        target_vehicle=target.get("vehicle"), target_group=target.get("group"),
        config_text=document["config"],
        dbc={name: DbcEntry(entry["sha256"], entry.get("content"))
             for name, entry in dbc.items()},
        kid=kid, envelope=envelope)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_int64(value: Any) -> bool:
    return is_int(value) and INT64_MIN <= value <= INT64_MAX


def _is_dbc_entry(value: Any) -> bool:
    return (isinstance(value, Mapping) and set(value) <= {"sha256", "content"}
            and isinstance(value.get("sha256"), bytes) and len(value["sha256"]) == 32
            and isinstance(value.get("content", b""), bytes))
