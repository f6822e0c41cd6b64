"""TLS to NATS: a client context that picks up rotated certificates without a restart, and a
small PKI for the secure demo and the tests.

nats-py keeps the ``ssl.SSLContext`` it was given and uses it for every (re)connection, and a
context's certificate chain and trust store can be reloaded in place, so re-reading the files
when they change is enough: the next connection — a reconnect, or the one after the server drops
us because our old certificate expired — presents the new certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)


class ReloadingTls:
    def __init__(self, ca: Path, cert: Path | None = None, key: Path | None = None) -> None:
        self.ca, self.cert, self.key = ca, cert, key
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.reloads = 0
        self._stamps = self._read_stamps()
        self._load()

    def _read_stamps(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns for p in (self.ca, self.cert, self.key) if p is not None)

    def _load(self) -> None:
        self.context.load_verify_locations(cafile=str(self.ca))
        if self.cert is not None:
            self.context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)

    def reload_if_changed(self) -> bool:
        try:
            stamps = self._read_stamps()
        except OSError as exc:
            log.error("TLS files unreadable, keeping the current ones: %s", exc)
            return False
        if stamps == self._stamps:
            return False
        try:
            self._load()
        except (OSError, ssl.SSLError) as exc:  # half-written files: try again next time
            log.error("TLS reload failed, keeping the current certificates: %s", exc)
            return False
        self._stamps = stamps
        self.reloads += 1
        log.info("TLS certificates reloaded")
        return True

    async def run(self, every: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.reload_if_changed()


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name → (cert, key)

    def server_config(self) -> str:
        """The ``tls`` block for nats-server's client port (mutual TLS)."""
        return (
            "tls {\n"
            f'  cert_file: "{self.server_cert}"\n  key_file: "{self.server_key}"\n'
            f'  ca_file: "{self.ca}"\n  verify: true\n  timeout: 5\n}}\n'
        )

    def client(self, name: str) -> ReloadingTls:
        cert, key = self.clients[name]
        return ReloadingTls(self.ca, cert, key)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def issue(
    folder: Path, name: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
    *, server: bool, days: int = 7,
) -> tuple[Path, Path]:  # fmt: skip
    """A certificate for ``name`` signed by the CA (server: valid for 127.0.0.1 and localhost)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path)
    return cert_path, key_path


def create_pki(folder: Path, clients: list[str]) -> Pki:
    """A throwaway CA, one server certificate for loopback, one client certificate per name."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("federation demo CA"))
        .issuer_name(_name("federation demo CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca = folder / "ca.crt"
    ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, folder / "ca.key")
    server_cert, server_key = issue(folder, "nats-server", ca_key, ca_cert, server=True)
    issued = {c: issue(folder, c, ca_key, ca_cert, server=False) for c in clients}
    return Pki(ca, server_cert, server_key, issued)


def load_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The demo CA's key and certificate (to issue a rotated certificate in tests)."""
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    return key, cert
