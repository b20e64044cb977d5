import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from devkit.pki import make_dev_pki


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_chain_to_the_ca_with_the_right_names_and_usages(tmp_path):
    pki = make_dev_pki(tmp_path)
    ca, server, client = load(pki.ca_cert), load(pki.server.cert), load(pki.client("v-1").cert)
    for certificate in (server, client):
        ca.public_key().verify(certificate.signature, certificate.tbs_certificate_bytes,
                               ec.ECDSA(certificate.signature_hash_algorithm))
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "v-1"
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert stat.S_IMODE(pki.client("v-1").key.stat().st_mode) == 0o600


def test_an_existing_pki_is_reused(tmp_path):
    first = make_dev_pki(tmp_path)
    cert = first.client("v").cert.read_bytes()
    second = make_dev_pki(tmp_path)
    assert second.ca_cert.read_bytes() == first.ca_cert.read_bytes()
    assert second.client("v").cert.read_bytes() == cert
