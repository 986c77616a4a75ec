"""How a push sink checks an https:// receiver, and the certificate it presents
(``SIC_REMOTE_WRITE_TLS_*``, ``SIC_OTLP_TLS_*``; Prometheus' remote_write ``tls_config``)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientTls:
    """``SIC_<SINK>_TLS_*``: how an https:// receiver is checked, and our certificate."""

    ca_file: str | None = None  # else the system's CAs
    cert_file: str | None = None  # with key_file: mutual TLS
    key_file: str | None = None
    insecure_skip_verify: bool = False

    def context(self) -> ssl.SSLContext:
        """The client context (raises OSError, ssl.SSLError or ValueError)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def load_problem(build: Callable[[], ssl.SSLContext]) -> str | None:
    """Why ``build`` cannot load its CA, certificate or key files, or None (the message names
    no file content: OpenSSL's reason, or the OS error)."""
    try:
        build()
    except ssl.SSLError as exc:
        return f"cannot load the CA, certificate or key: {exc.reason or exc}"
    except (OSError, ValueError) as exc:
        return f"cannot load the CA, certificate or key: {exc}"
    return None
