"""Mutual TLS credentials, in HumanFirst's `mtls-credentials.json` shape.

HumanFirst's `hf integrations create custom --key-out mtls-credentials.json` writes the
file the integration's server reads:

    {"local_keypair": {"certificate": PEM, "private_key": PEM}, "remote_certificate": PEM}

`local_keypair` is the server's own certificate and key; `remote_certificate` is what the
server trusts to sign client certificates (HumanFirst's client certificate, or a CA). A
client reads the mirror image: its own pair, and the CA that signed the server.

`ferry certs` (`write_development_certificates`) makes both for development: a CA, a
server pair (for `localhost` and `127.0.0.1` and any `--host`), a client pair, and
`mtls-credentials.json` (for the gateway) and `client-credentials.json` (for `ferry
workspaces` and other clients).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_FILE = "mtls-credentials.json"
CLIENT_FILE = "client-credentials.json"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


class CredentialsError(ValueError):
    """The credentials file is missing or not in the expected shape; the message says which."""


class _Keypair(msgspec.Struct, forbid_unknown_fields=False):
    certificate: str
    private_key: str


class _CredentialsFile(msgspec.Struct, forbid_unknown_fields=False):
    local_keypair: _Keypair
    remote_certificate: str


@dataclass(frozen=True)
class MtlsCredentials:
    certificate: bytes  # PEM: our own certificate (chain)
    private_key: bytes  # PEM
    remote_certificate: bytes  # PEM: what we trust the other side's certificate from

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MtlsCredentials:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
        try:
            parsed = msgspec.json.decode(raw, type=_CredentialsFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CredentialsError(
                f"{path} is not an mtls-credentials.json file ({exc}); it needs"
                " local_keypair.certificate, local_keypair.private_key and remote_certificate"
            ) from None
        credentials = cls(
            parsed.local_keypair.certificate.encode(),
            parsed.local_keypair.private_key.encode(),
            parsed.remote_certificate.encode(),
        )
        credentials.check(str(path))
        return credentials

    def check(self, where: str) -> None:
        """Each PEM parses (a bad one fails here, in words, not deep inside gRPC)."""
        for name, pem in (
            ("local_keypair.certificate", self.certificate),
            ("remote_certificate", self.remote_certificate),
        ):
            try:
                x509.load_pem_x509_certificates(pem)
            except ValueError:
                raise CredentialsError(f"{where}: {name} is not a PEM certificate") from None
        try:
            serialization.load_pem_private_key(self.private_key, password=None)
        except (ValueError, TypeError):
            raise CredentialsError(
                f"{where}: local_keypair.private_key is not an unencrypted PEM private key"
            ) from None

    def to_json(self) -> bytes:
        return msgspec.json.format(
            msgspec.json.encode(
                _CredentialsFile(
                    _Keypair(self.certificate.decode(), self.private_key.decode()),
                    self.remote_certificate.decode(),
                )
            )
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """The server side: our pair, and client certificates required and verified."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate)],
            root_certificates=self.remote_certificate,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The client side: our pair, and the server verified against the remote one."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.remote_certificate,
            private_key=self.private_key,
            certificate_chain=self.certificate,
        )


# -- development certificates -------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(common_name: str = "Ferry development CA", *, days: int = 3650) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - dt.timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(
    ca: Issued,
    common_name: str,
    *,
    client: bool,
    hosts: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`: for a server (its `hosts` as DNS names or IP
    addresses) or for a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class DevelopmentCertificates:
    ca: Issued
    server: Issued
    client: Issued

    @property
    def server_credentials(self) -> MtlsCredentials:
        return MtlsCredentials(
            self.server.certificate_pem, self.server.key_pem, self.ca.certificate_pem
        )

    @property
    def client_credentials(self) -> MtlsCredentials:
        return MtlsCredentials(
            self.client.certificate_pem, self.client.key_pem, self.ca.certificate_pem
        )


def make_development_certificates(hosts: tuple[str, ...] = ()) -> DevelopmentCertificates:
    ca = make_ca()
    names = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))  # in order, once each
    server = issue(ca, names[0], client=False, hosts=names)
    client = issue(ca, "ferry-client", client=True)
    return DevelopmentCertificates(ca, server, client)


def write_development_certificates(out: Path, hosts: tuple[str, ...] = ()) -> list[Path]:
    """Write ca.pem, server.pem/.key, client.pem/.key, mtls-credentials.json (the
    gateway's) and client-credentials.json into `out`; keys are readable by the owner only.
    The CA's key is not kept: nothing else can be signed with it."""
    made = make_development_certificates(hosts)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "ca.pem": (made.ca.certificate_pem, 0o644),
        "server.pem": (made.server.certificate_pem, 0o644),
        "server.key": (made.server.key_pem, 0o600),
        "client.pem": (made.client.certificate_pem, 0o644),
        "client.key": (made.client.key_pem, 0o600),
        SERVER_FILE: (made.server_credentials.to_json(), 0o600),
        CLIENT_FILE: (made.client_credentials.to_json(), 0o600),
    }
    written = []
    for name, (content, mode) in files.items():
        path = out / name
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(path, mode)  # an existing file keeps its old mode through O_CREAT
        written.append(path)
    return written
