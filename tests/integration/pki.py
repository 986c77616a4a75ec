"""A small PKI made by the real ``openssl``: a CA, server certificates for 127.0.0.1 and a client
certificate (for the TLS tests of /metrics and of the push sinks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _cert(d: Path, name: str, cn: str, ext: str) -> None:
    """``name.key``/``name.crt``: an EC key and a certificate ``ca.crt`` signed."""
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d
    )
    signed = f"-CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile {name}.ext".split()
    _openssl("x509", "-req", "-in", f"{name}.csr", *signed, "-out", f"{name}.crt", cwd=d)


def make_pki(d: Path) -> Path:
    """In ``d``: ``ca.crt``/``ca.key``; ``server`` (CN collector-one) and ``server2``
    (collector-two), both for IP 127.0.0.1; ``client`` (CN prometheus, clientAuth)."""
    ca = ["-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=sic-test-ca"]
    _openssl("req", *EC_KEY, *ca, cwd=d)
    _cert(d, "server", "collector-one", "subjectAltName=IP:127.0.0.1")
    _cert(d, "server2", "collector-two", "subjectAltName=IP:127.0.0.1")
    _cert(d, "client", "prometheus", "extendedKeyUsage=clientAuth")
    return d
