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

from pathlib import Path

from sci_fetch.demo.tls import Certs, SeaweedS3Https, make_certs

__all__ = ["CA_VARS", "CA_VARS_DROPPED", "Certs", "SeaweedS3Https", "make_certs", "trust_env"]

# Variables through which this machine (or a user's shell) points TLS clients at a CA bundle; in
# the benchmark each is pointed at the throw-away CA, or removed, so no tool trusts anything else.
CA_VARS = ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
CA_VARS_DROPPED = ("SSL_CERT_DIR", "NIX_SSL_CERT_FILE", "HTTPLIB2_CA_CERTS", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")


def trust_env(env: dict[str, str], ca: Path) -> dict[str, str]:
    """``env`` with every CA-bundle variable pointing at ``ca`` (and the directory-style ones gone)."""
    env = {k: v for k, v in env.items() if k not in CA_VARS_DROPPED}
    env.update({k: str(ca) for k in CA_VARS})
    return env
