"""HTTPS at the front door (README: Operations): HAProxy terminates TLS with the
operator's certificate, so the chat processes never hold a key or do TLS work.

haproxy.cfg carries the TLS lines; this gives their values, or none (the lines
are left out) when the stack has no certificate: plain HTTP, as on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HTTPS_PORT = 8443
# A URL on this port names no port.
STANDARD_HTTPS_PORT = 443

# After any HTTPS answer a browser refuses plain HTTP to this site for this long
# (HSTS). A year: PROTOCOL.md asks for at least 180 days, the browsers' preload
# list for a year.
HSTS_MAX_AGE_SECONDS = 365 * 24 * 3600

# haproxy.cfg's TLS placeholders: a line naming any of them is left out without TLS.
TLS_PLACEHOLDERS = ("https_bind", "tls_cert", "https_port_suffix", "hsts_max_age")


@dataclass(frozen=True)
class FrontTls:
    """The front door's certificate (one PEM: the certificate, its chain, the key;
    HAProxy reads it at start and at each reload) and the port HTTPS is served on."""

    cert: Path
    port: int = DEFAULT_HTTPS_PORT

    @classmethod
    def from_env(cls) -> FrontTls | None:
        """CHAT_TLS_CERT and CHAT_HTTPS_PORT; None (plain HTTP) without a certificate."""
        cert = os.environ.get("CHAT_TLS_CERT", "").strip()
        if not cert:
            return None
        port = os.environ.get("CHAT_HTTPS_PORT", "").strip()
        return cls(Path(cert).resolve(), int(port) if port else DEFAULT_HTTPS_PORT)

    def check(self) -> None:
        """Refuse a file HAProxy could not serve, before anything starts: HAProxy's own
        refusal would only show in its log, after supervisord gave up restarting it."""
        try:
            text = self.cert.read_text(errors="replace")
        except OSError as error:
            raise RuntimeError(f"CHAT_TLS_CERT {self.cert}: {error.strerror}") from error
        if "-----BEGIN CERTIFICATE-----" not in text or "PRIVATE KEY-----" not in text:
            raise RuntimeError(f"CHAT_TLS_CERT {self.cert} needs the certificate, its chain "
                               "and the private key in one PEM file (README: HTTPS)")

    def template_values(self, bind: str) -> dict[str, str]:
        """haproxy.cfg's TLS placeholders for a front door whose plain HTTP is on `bind`
        (host:port): HTTPS on the same host."""
        host = bind.rpartition(":")[0]
        return {
            "https_bind": f"{host}:{self.port}",
            "tls_cert": str(self.cert),
            "https_port_suffix": "" if self.port == STANDARD_HTTPS_PORT else f":{self.port}",
            "hsts_max_age": str(HSTS_MAX_AGE_SECONDS),
        }
