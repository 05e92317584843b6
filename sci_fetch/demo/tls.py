"""TLS for the tests and the benchmark: a throw-away CA and server certificate, and SeaweedFS with its S3
HTTPS port beside the plain one, so the HTTPS path (and a certificate that is not trusted) can be tested
against a real server, the way a private S3-compatible server with its own CA is used.

Needs the ``cryptography`` package (in the ``test`` extra and bench/requirements.txt), imported only here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sci_fetch.demo.seaweed import SeaweedS3, _port_range, _try_bind


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate (PEM): what every client trusts
    cert: Path  # the server's certificate (PEM)
    key: Path  # the server's private key (PEM)


def make_certs(folder: Path) -> Certs:
    """A new CA and a server certificate for 127.0.0.1 / localhost signed by it, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sci_fetch bench throw-away CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _day_builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        _day_builder(server_name, ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    certs.key.chmod(0o600)
    return certs


def _day_builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    """A certificate builder valid from five minutes ago for a day (clock skew between the test's processes)."""
    from cryptography import x509

    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _key_usage(**allowed: bool) -> Any:
    """A KeyUsage extension with only the named usages set (the class takes all nine flags)."""
    from cryptography import x509

    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{flag: allowed.get(flag, False) for flag in flags})


def _free_port() -> int:
    """A free loopback port from the launcher's range (below the ephemeral one, like its others)."""
    low, high = _port_range()
    rng = random.SystemRandom()
    for _ in range(2000):
        sock = _try_bind(rng.randrange(low, high))
        if sock is not None:
            port: int = sock.getsockname()[1]
            sock.close()
            return port
    raise RuntimeError(f"no free loopback port in {low}-{high}")


class SeaweedS3Https(SeaweedS3):
    """``weed mini`` with its S3 HTTPS port open beside the plain one (same buckets, same keys).

    The demo launcher picks and checks every other port; the HTTPS port is one more flag on its
    command line, chosen afresh on each launch attempt (a lost race is retried like the others)."""

    def __init__(self, *args: Any, certs: Certs, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.certs = certs
        self.https_port: int | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def _build_command(self, weed: str) -> list[str]:
        self.https_port = _free_port()
        return super()._build_command(weed) + [
            f"-s3.port.https={self.https_port}",
            f"-s3.cert.file={self.certs.cert}",
            f"-s3.key.file={self.certs.key}",
        ]

    def start(self) -> SeaweedS3Https:
        super().start()
        deadline = time.monotonic() + self.startup_timeout
        port = self.https_port
        assert port is not None, "set by _build_command"
        while not self._port_open(port):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS's S3 HTTPS port {self.https_port} did not open; see {self.log_path}")
            time.sleep(0.1)
        return self
