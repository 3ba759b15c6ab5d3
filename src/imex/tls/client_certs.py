"""Client certificates on the HTTPS port (certificate sign-in with smart cards): which CA and CRL they are
checked against, what the TLS layer hands the application about the peer (the ASGI TLS extension), and
a second look at revocation and validity when the certificate is used to sign in.

The handshake already refuses a certificate that does not chain to the client CA, is expired or is on
the CRL (see ServerContext). The second look is for resumed TLS sessions: a session resumed from a
ticket carries the certificate verified when the session began, so a certificate revoked since then
would otherwise still sign in over it."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from imex.config import Config
from imex.tls.profile import TlsConfigError

MODES = ("off", "optional")
# ASGI TLS extension: the negotiated version as the protocol's two-byte number
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def mode(config: Config) -> str:
    """http.client_certificates, checked: "off" or "optional"."""
    value = str(config["http.client_certificates"]).strip().lower()
    if value not in MODES:
        raise TlsConfigError(f"http.client_certificates must be one of {', '.join(MODES)}, not {value!r}")
    if value != "off" and not config["http.tls"]:
        raise TlsConfigError(
            "http.client_certificates needs http.tls: the hub must terminate TLS itself to see client "
            "certificates (a TLS-terminating reverse proxy keeps them)"
        )
    return value


def requested(config: Config) -> bool:
    """Whether the HTTPS port asks clients for a certificate (certificate sign-in is offered)."""
    return bool(config["http.tls"]) and str(config["http.client_certificates"]).strip().lower() == "optional"


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate of a connection, as the TLS layer verified it."""

    der: bytes
    subject: str  # RFC 4514, most specific attribute first (CN=...,O=...,C=...)
    emails: tuple[str, ...]  # rfc822Name entries of the subject alternative name
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str  # SHA-256 of the DER form, hex

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            emails = tuple(str(e) for e in san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            emails = ()
        return cls(
            der=der,
            subject=cert.subject.rfc4514_string(),
            emails=emails,
            issuer=cert.issuer.rfc4514_string(),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        )

    @classmethod
    def from_pem(cls, pem: str) -> PeerCertificate:
        return cls.from_der(ssl.PEM_cert_to_DER_cert(pem))

    @property
    def label(self) -> str:
        """How the certificate is named in messages and the audit trail."""
        return self.subject or (self.emails[0] if self.emails else f"serial {self.serial:x}")


def asgi_tls_extension(ssl_object: Any) -> dict[str, Any]:
    """What the ASGI TLS extension (scope["extensions"]["tls"]) says about a connection: the client
    certificate the handshake verified (PEM; the leaf only, as Python exposes it) and its subject, the
    TLS version. Present only on connections whose handshake the hub made itself, so no header can
    forge it."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    chain: list[str] = []
    name = None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    version = ssl_object.version() if ssl_object is not None else None
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,
    }


def from_scope(scope: Any) -> PeerCertificate | None:
    """The verified client certificate of the request's connection, or None."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return PeerCertificate.from_pem(chain[0]) if chain else None


@dataclass(frozen=True)
class Trust:
    """The client CA file and its CRL file: what a client certificate is checked against."""

    ca_file: Path
    crl_file: Path


class _PemFiles:
    """Certificates and CRLs read from PEM (or DER) files, read again when a file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[int, list[Any]]] = {}

    def _load(self, path: Path, marker: bytes, pem: Any, der: Any) -> list[Any] | None:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            return None
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        data = path.read_bytes()
        found = [pem(marker + chunk) for chunk in data.split(marker)[1:]]
        if not found and data:
            found = [der(data)]
        with self._lock:
            self._cache[path] = (stamp, found)
        return found

    def certificates(self, path: Path) -> list[x509.Certificate] | None:
        return self._load(
            path, b"-----BEGIN CERTIFICATE-----", x509.load_pem_x509_certificate, x509.load_der_x509_certificate
        )

    def crls(self, path: Path) -> list[x509.CertificateRevocationList] | None:
        return self._load(path, b"-----BEGIN X509 CRL-----", x509.load_pem_x509_crl, x509.load_der_x509_crl)


_FILES = _PemFiles()


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def problem(cert: PeerCertificate, trust: Trust, now: dt.datetime | None = None) -> str:
    """Why `cert` cannot be used now ("" when it can): outside its validity, not issued by a CA of the
    client CA file, or revoked per the current CRL of that CA (a missing or lapsed CRL refuses it:
    revocation must be checkable). CRLs count only when that CA signed them."""
    now = now or dt.datetime.now(dt.UTC)
    if now < cert.not_before:
        return "the certificate is not valid yet"
    if now > cert.not_after:
        return "the certificate has expired"
    try:
        cas = _FILES.certificates(trust.ca_file) or []
        crls = _FILES.crls(trust.crl_file) or []
    except ValueError:
        return "the client CA or revocation list file cannot be read"
    leaf = x509.load_der_x509_certificate(cert.der)
    issuers = [ca for ca in cas if ca.subject == leaf.issuer and _issued_by(leaf, ca)]
    if not issuers:
        return "the certificate was not issued by the client CA"
    mine = [
        crl
        for crl in crls
        for ca in issuers
        if crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    ]
    if not mine:
        return "no revocation list of the certificate's issuer is available"
    for crl in mine:
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            return "the revocation list of the certificate's issuer has lapsed"
        if crl.get_revoked_certificate_by_serial_number(cert.serial) is not None:
            return "the certificate has been revoked"
    return ""
