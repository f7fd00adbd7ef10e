"""TLS for the local Entra token endpoint: a throwaway CA and a server certificate, made at start-up.

azure-identity refuses an authority that is not ``https://`` (``normalize_authority`` in
``azure/identity/_internal/utils.py``), so the real ``ClientAssertionCredential`` can only reach the
local token endpoint over TLS. Clients trust it by CA file: ``connection_verify=ca_file`` for an
azure-core pipeline (``AioHttpTransport`` turns a path into ``ssl.create_default_context(cafile=...)``,
``RequestsTransport`` hands it to requests as ``verify``), or ``SSL_CERT_FILE`` pointing at
:func:`ca_bundle`'s output, which keeps the public roots too (aiohttp reads it once, at import).

The CA's private key never leaves memory and the server key is on disk only while it is loaded,
so the one file written, the CA certificate, is all a client needs and nothing it could sign with.
"""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE_NAME = "identity-local-ca.pem"
# Names every local client may use for the endpoint; the bind host is added when it is another one.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
# A new CA is made at every start, so it only has to outlive one dev session; a month is ample for
# that and keeps a stray copy of the CA file from being trusted for long.
VALIDITY = timedelta(days=30)
# Certificate times have one-second resolution: back-dating a little keeps a certificate made in
# this second valid for a client that checks it in the same second.
BACKDATE = timedelta(minutes=1)


@dataclass(frozen=True)
class LocalTls:
    """The server side (``context``) and the file clients trust (``ca_file``, PEM)."""

    ca_file: Path
    context: ssl.SSLContext


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); the server's key only signs its TLS handshakes (ECDSA)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Viva Learning Sync local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # de-duplicated, order kept
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _certificates(hosts: Iterable[str]) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """(CA certificate, server certificate, server key). P-256 keys: fast to make and accepted everywhere."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("vlsync local identity CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("vlsync local Entra token endpoint"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, server_cert, server_key


def create(directory: Path, hosts: Iterable[str] = ()) -> LocalTls:
    """Make a CA and a server certificate for ``DEFAULT_HOSTS`` plus ``hosts``; write the CA to ``directory``."""
    ca_cert, server_cert, server_key = _certificates([*DEFAULT_HOSTS, *hosts])
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / CA_FILE_NAME
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain reads only files: the key is written to a private (0700) directory and removed
    # as soon as it is loaded.
    with tempfile.TemporaryDirectory(prefix="vlsync-identity-key-") as private:
        chain = Path(private) / "server.pem"
        chain.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + server_cert.public_bytes(serialization.Encoding.PEM)
        )
        context.load_cert_chain(chain)
    return LocalTls(ca_file, context)


def ca_bundle(path_out: str | Path, ca_file: str | Path) -> Path:
    """Write certifi's public roots plus the local CA to ``path_out``, for ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE``.

    Pointing those variables at the local CA alone would break every other https call of the
    process (to Azure, to PyPI); the combined bundle trusts both.
    """
    out = Path(path_out)
    local = Path(ca_file).read_text()
    out.write_text(certifi.contents().rstrip("\n") + "\n" + local)
    return out
