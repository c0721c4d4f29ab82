"""A local certificate authority and a wildcard certificate for the sandbox domain, so that
clients which reach sandboxes as `https://<port>-<id>.<domain>` work on a single machine
(`corral up --tls`). Production uses a real wildcard certificate instead (docs/guide/network.md).

Files in the TLS directory: `ca.pem` (trust this: `NODE_EXTRA_CA_CERTS`), `ca-bundle.pem` (the
system's trusted CAs plus this one: `SSL_CERT_FILE`), `proxy.pem` and `proxy-key.pem` (the
proxy's). Made once and reused while they cover the domain and are far from expiring."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SYSTEM_BUNDLES = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pki/tls/certs/ca-bundle.crt"))
CA_DAYS = 3650
CERT_DAYS = 397
RENEW_BEFORE = datetime.timedelta(days=30)
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def bundle(self) -> Path:
        return self.directory / "ca-bundle.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "proxy.pem"

    @property
    def key(self) -> Path:
        return self.directory / "proxy-key.pem"


def names_for(domain: str) -> list[str]:
    """What the proxy's certificate covers: every sandbox host under the domain."""
    return [f"*.{domain}", domain, "localhost"]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _make_ca(files: TlsFiles) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corral local CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(files.ca_key, key)
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_cert(files: TlsFiles, domain: str) -> None:
    ca_cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names_for(domain)]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{domain}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.key, key)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _current(path: Path, names: list[str] | None = None) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if names is None:
        return True
    try:
        covered = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(names) <= set(covered.get_values_for_type(x509.DNSName))


def ensure_certificates(directory: Path, domain: str) -> TlsFiles:
    """The CA and the proxy's certificate for `domain`, made when missing or stale."""
    files = TlsFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    new_ca = not (_current(files.ca) and files.ca_key.is_file())
    if new_ca:
        _make_ca(files)
    if new_ca or not (_current(files.cert, names_for(domain)) and files.key.is_file()):
        _make_cert(files, domain)
    system = next((p.read_text() for p in SYSTEM_BUNDLES if p.is_file()), "")
    files.bundle.write_text(system.rstrip("\n") + "\n" + files.ca.read_text())
    return files
