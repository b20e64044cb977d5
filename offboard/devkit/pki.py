"""A throwaway PKI for demos and tests: a CA, a broker certificate, client certificates.

Never for production: keys are unencrypted and live a few days. Real fleets issue vehicle
certificates from their own CA (often in a TPM or secure element).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """What an MQTT client or server needs."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server: TlsFiles

    def client(self, name: str) -> TlsFiles:
        """A client certificate with CN=name (the broker's username), made once and reused."""
        files = TlsFiles(self.ca_cert, self.directory / f"{name}.crt",
                         self.directory / f"{name}.key")
        if not files.cert.exists():
            _issue(self, name, files, server_names=())
        return files


def make_dev_pki(directory: Path, *,
                 server_names: Sequence[str] = ("localhost", "127.0.0.1")) -> DevPki:
    """Create (or reuse) a CA and a server certificate in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    pki = DevPki(directory, ca_cert, ca_key,
                 TlsFiles(ca_cert, directory / "server.crt", directory / "server.key"))
    if not ca_cert.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent throwaway CA")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
        _write_key(ca_key, key)
        ca_cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if not pki.server.cert.exists():
        _issue(pki, "edge-agent test broker", pki.server, server_names=server_names)
    return pki


def _issue(pki: DevPki, common_name: str, files: TlsFiles, *,
           server_names: Sequence[str]) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False))
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_general_name(name) for name in server_names]), critical=False)
    _write_key(files.key, key)
    files.cert.write_bytes(builder.sign(ca_key, hashes.SHA256())
                           .public_bytes(serialization.Encoding.PEM))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
