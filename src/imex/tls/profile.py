"""TLS contexts with the BCP 195 profile (RFC 9325, as DICOM PS3.15 B.9 asks): TLS 1.2 or 1.3 only,
forward-secret AEAD cipher suites only, no compression, no renegotiation. Every TLS endpoint of the
hub (DICOM, MLLP, HTTPS, outbound associations) gets its context here, so the profile is set once."""

from __future__ import annotations

import ssl
from pathlib import Path

from imex.config import ConfigError

# TLS 1.2 suites of BCP 195 (ECDHE/DHE key exchange, AES-GCM or ChaCha20-Poly1305); TLS 1.3 suites are
# all AEAD and forward secret, and OpenSSL enables them separately.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


class TlsConfigError(ConfigError):
    """A certificate, key or CA file is missing or unreadable; the message names it."""


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def _need(path: str | Path, what: str) -> str:
    if not path or not Path(path).is_file():
        raise TlsConfigError(
            f"{what} {path or '(not set)'} does not exist: create it with `imex tls init` or set the path in imex.toml"
        )
    return str(path)


def server_context(
    cert: str | Path,
    key: str | Path,
    *,
    client_ca: str | Path | None = None,
    crl: str | Path | None = None,
    require_client: bool = False,
) -> ssl.SSLContext:
    """For a listener. With `client_ca`, clients may (or with require_client, must) present a
    certificate that CA issued; with `crl`, a revoked one is refused during the handshake."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(_need(cert, "certificate"), _need(key, "private key"))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"cannot use certificate {cert} with key {key}: {exc.reason or exc}") from None
    if client_ca:
        context.load_verify_locations(cafile=_need(client_ca, "CA certificate"))
        context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
        if crl and Path(crl).is_file():
            context.load_verify_locations(cafile=str(crl))
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_context(
    ca: str | Path | None, *, cert: str | Path | None = None, key: str | Path | None = None
) -> ssl.SSLContext:
    """For an outbound connection: the peer must present a certificate from `ca` (the system's trust
    store when None) naming the host dialled; `cert`/`key` identify the hub to a peer that asks."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca:
        context.load_verify_locations(cafile=_need(ca, "CA certificate"))
    else:
        context.load_default_certs()
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert and Path(cert).is_file():
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def peer_common_name(certificate: dict | None) -> str:
    """The subject common name of a peer certificate as `SSLSocket.getpeercert()` returns it."""
    for rdn in (certificate or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""
