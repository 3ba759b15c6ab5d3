"""The client certificate of the request's connection, as the HTTPS listener verified it (imex.web.server
puts it in the ASGI TLS extension; no header can), and the CA and CRL that sign-ins check it against again."""

from __future__ import annotations

from fastapi import Request

from imex.config import Config
from imex.tls.client_certs import PeerCertificate, Trust, from_scope
from imex.tls.files import TlsFiles


def presented(request: Request) -> PeerCertificate | None:
    """The verified client certificate of this request's connection, or None."""
    return from_scope(request.scope)


def trust(config: Config) -> Trust:
    """The client CA and its CRL (http.client_ca_file and http.client_crl_file, else tls.ca_file and
    tls.crl_file), which sign-ins check the certificate against again."""
    return Trust(*TlsFiles.of(config).https_client_files(config))
