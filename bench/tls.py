"""The HTTPS regime's pieces: a throw-away CA and server certificate, SeaweedFS with its S3 HTTPS
port, and the environment that makes every tool trust that CA (and nothing else).

The CA and the certificate are made at bench start with the ``cryptography`` package (127.0.0.1
and ``localhost`` in the SAN), live in the scratch folder and are never reused. Every tool is told
about the CA the way its users would tell it about a private S3-compatible server's CA:
botocore (sci_fetch, the Animl method) and s5cmd through ``AWS_CA_BUNDLE``, rclone with
``--ca-cert``, the CRT driver with ``--ca-file``. No tool is run with verification off (s5cmd's
``--no-verify-ssl`` would also make it open a new connection per object, which is not how users run it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import time
from dataclasses import dataclass
from pathlib import Path

from sci_fetch.demo.seaweed import SeaweedS3, _port_range, _try_bind

# Variables through which this machine (or a user's shell) points TLS clients at a CA bundle; in
# the benchmark each is pointed at the throw-away CA, or removed, so no tool trusts anything else.
CA_VARS = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
CA_VARS_DROPPED = ("SSL_CERT_DIR", "NIX_SSL_CERT_FILE", "HTTPLIB2_CA_CERTS", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")


@dataclass(frozen=True)
class Certs:
    ca: Path    # the CA certificate (PEM): what every client trusts
    cert: Path  # the server's certificate (PEM)
    key: Path   # the server's private key (PEM)


def make_certs(folder: Path) -> Certs:
    """A new CA and a server certificate for 127.0.0.1 / localhost signed by it, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sci_fetch bench throw-away CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    certs.key.chmod(0o600)
    return certs


def trust_env(env: dict[str, str], ca: Path) -> dict[str, str]:
    """``env`` with every CA-bundle variable pointing at ``ca`` (and the directory-style ones gone)."""
    env = {k: v for k, v in env.items() if k not in CA_VARS_DROPPED}
    env.update({k: str(ca) for k in CA_VARS})
    return env


def _free_port() -> int:
    """A free loopback port from the launcher's range (below the ephemeral one, like its others)."""
    low, high = _port_range()
    rng = random.SystemRandom()
    for _ in range(2000):
        sock = _try_bind(rng.randrange(low, high))
        if sock is not None:
            port = sock.getsockname()[1]
            sock.close()
            return port
    raise RuntimeError(f"no free loopback port in {low}-{high}")


class SeaweedS3Https(SeaweedS3):
    """``weed mini`` with its S3 HTTPS port open beside the plain one (same buckets, same keys).

    The demo launcher picks and checks every other port; the HTTPS port is one more flag on its
    command line, chosen afresh on each launch attempt (a lost race is retried like the others)."""

    def __init__(self, *args, certs: Certs, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.certs = certs
        self.https_port: int | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def _build_command(self, weed: str) -> list[str]:
        self.https_port = _free_port()
        return super()._build_command(weed) + [f"-s3.port.https={self.https_port}", f"-s3.cert.file={self.certs.cert}",
                                               f"-s3.key.file={self.certs.key}"]

    def start(self) -> SeaweedS3Https:
        super().start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._port_open(self.https_port):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS's S3 HTTPS port {self.https_port} did not open; see {self.log_path}")
            time.sleep(0.1)
        return self

