"""Certificate sign-in (smart cards): which user a client certificate identifies, signing in with one, and
an institution's rule that its users' password sign-ins also need their certificate.

A user is identified by `User.certificate_subject`: either the certificate's subject as an RFC 4514 string
(CN=Jane Smith,O=Kings,C=GB) or an e-mail address from its subject alternative name. Both are stored in a
canonical form, lower-cased, because X.500 names and e-mail domains compare case-insensitively; the same
form is computed from the certificate, so matching is a plain equality. Whether a certificate chains to
the client CA, is within its validity and is not revoked is decided by the TLS layer (imex.tls); here it is
checked again against the current CRL, for TLS sessions resumed since a revocation."""

from __future__ import annotations

import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.accounts import AccountError, LoginFailed, NameTaken, record_sign_in
from imex.auth.permissions import AuditActor
from imex.db.models import Institution, User
from imex.errors import Conflict
from imex.tls import client_certs
from imex.tls.client_certs import PeerCertificate, Trust

_EMAIL = re.compile(r"[^@\s,=+]+@[^@\s,=+]+")
_NAMES = {"E": NameOID.EMAIL_ADDRESS, "EMAILADDRESS": NameOID.EMAIL_ADDRESS}
MAX_LENGTH = 400


class CertificateRefused(LoginFailed):
    """Certificate sign-in refused; `public` says why (no certificate, not registered, revoked...)."""


class CertificateRequired(LoginFailed):
    """A password sign-in refused because the user's institution requires their certificate as well."""


def canonical(subject: str) -> str:
    """The stored form of a certificate identity: an e-mail address, or an RFC 4514 subject (spaces after
    the commas and E=/emailAddress= are tolerated), lower-cased. Raises AccountError when it is neither."""
    text = subject.strip()
    if not text:
        raise AccountError("give the certificate's subject (RFC 4514, e.g. CN=Jane Smith,O=Kings,C=GB) or e-mail")
    if _EMAIL.fullmatch(text):
        form = text
    else:
        try:
            name = x509.Name.from_rfc4514_string(re.sub(r"\s*,\s*(?=[A-Za-z0-9.]+=)", ",", text), _NAMES)
        except ValueError:
            name = None
        if name is None or not name.rdns:
            raise AccountError(
                f"{text[:100]!r} is neither an RFC 4514 subject such as CN=Jane Smith,O=Kings,C=GB "
                "(`openssl x509 -noout -subject -nameopt RFC2253 -in CERT`) nor an e-mail address"
            )
        form = name.rfc4514_string()
    if len(form) > MAX_LENGTH:
        raise AccountError(f"a certificate subject is at most {MAX_LENGTH} characters")
    return form.lower()


def identities(cert: PeerCertificate) -> list[str]:
    """The canonical forms a certificate can be registered under: its subject, then its e-mail SANs."""
    keys = []
    for value in (cert.subject, *cert.emails):
        try:
            keys.append(canonical(value))
        except AccountError:
            continue  # an empty subject, or a SAN that is no plain address
    return list(dict.fromkeys(keys))


def subject_of_file(data: bytes) -> str:
    """The identity to register from a certificate file (PEM or DER): its subject, or its e-mail SAN when
    the subject is empty."""
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise AccountError("that file is not an X.509 certificate (PEM or DER)") from None
    keys = identities(PeerCertificate.from_der(cert.public_bytes(Encoding.DER)))
    if not keys:
        raise AccountError("the certificate has neither a subject nor an e-mail address to register")
    return keys[0]


def user_for(session: Session, cert: PeerCertificate) -> User | None:
    """The user a certificate is registered to: by subject first, else by an e-mail SAN."""
    keys = identities(cert)
    if not keys:
        return None
    found = {
        u.certificate_subject.lower(): u
        for u in session.scalars(
            select(User).where(or_(User.certificate_subject.in_(keys), func.lower(User.certificate_subject).in_(keys)))
        )
        if u.certificate_subject
    }
    return next((found[k] for k in keys if k in found), None)


def set_subject(session: Session, user: User, subject: str | None, **actor: Any) -> str | None:
    """Register the certificate identity of `user` (None or "" removes it); one identity per user and one
    user per identity. `actor`: who did it, as audit.record's user fields. Returns the stored form."""
    value = canonical(subject) if subject and subject.strip() else None
    if value is not None:
        other = session.scalar(
            select(User.username).where(func.lower(User.certificate_subject) == value, User.id != user.id)
        )
        if other is not None:
            raise NameTaken(f"that certificate is registered to {other} already; remove it there first")
    user.certificate_subject = value
    audit.record(
        session,
        "user.certificate",
        object_type="user",
        object_id=user.username,
        detail=f"certificate {value}" if value else "certificate removed",
        **actor,
    )
    return value


def _refuse(session: Session, cert: PeerCertificate | None, why: str, ip: str, user: User | None = None) -> None:
    who: dict[str, Any] = {"ip": ip}
    if user is not None:
        who.update(user_id=user.id, username=user.username, institution_id=user.institution_id)
    label = f"certificate {cert.label}" if cert is not None else "no certificate"
    audit.record(session, "auth.login_failed", outcome="denied", detail=f"{label}: {why}"[:500], **who)


def sign_in(session: Session, cert: PeerCertificate | None, ip: str, trust: Trust) -> User:
    """The enabled user the connection's verified certificate is registered to, signed in (audited as
    auth.login "certificate SUBJECT"). Every refusal is audited as denied and raises CertificateRefused."""
    if cert is None:
        _refuse(session, None, "none presented", ip)
        raise CertificateRefused(
            "No certificate was presented. Insert your smart card (or install your certificate in this "
            "browser), close every window of the browser and try again, or sign in with your password."
        )
    problem = client_certs.problem(cert, trust)
    if problem:
        _refuse(session, cert, problem, ip)
        raise CertificateRefused(f"This certificate cannot be used: {problem}.")
    user = user_for(session, cert)
    if user is None:
        _refuse(session, cert, "not registered to any user", ip)
        raise CertificateRefused(
            f"This certificate is not registered to any user ({cert.label}). Ask your institution's "
            "imex administrator to register it to your account, or sign in with your password."
        )
    if user.disabled:
        _refuse(session, cert, "account disabled", ip, user)
        raise CertificateRefused("This account is disabled. Ask your institution's administrator.")
    record_sign_in(session, user, ip, f"certificate {cert.label}")
    return user


def required(session: Session, user: User) -> bool:
    """Whether the user's institution requires a certificate to sign in."""
    return bool(session.scalar(select(Institution.require_certificate).where(Institution.id == user.institution_id)))


def check_password_sign_in(session: Session, user: User, cert: PeerCertificate | None, ip: str, trust: Trust) -> None:
    """After a right password: when the user's institution requires a certificate, the same connection
    must carry a verified certificate registered to this very user; otherwise the refusal is audited
    (denied) and CertificateRequired raised."""
    if not required(session, user):
        return
    who: AuditActor = {"user_id": user.id, "username": user.username, "institution_id": user.institution_id, "ip": ip}
    why = ""
    if cert is None:
        why = "none presented"
    elif problem := client_certs.problem(cert, trust):
        why = f"certificate {cert.label}: {problem}"
    else:
        owner = user_for(session, cert)
        if owner is None or owner.id != user.id:
            why = f"certificate {cert.label} is not this user's"
    if not why:
        return
    audit.record(session, "auth.login_failed", outcome="denied", detail=f"certificate required: {why}"[:500], **who)
    raise CertificateRequired(
        "Your institution requires a certificate (smart card) to sign in, and this connection did not "
        "present yours. Insert your card and choose 'Sign in with your smart card or certificate'."
    )


def set_required(inst: Institution, required: bool, *, offered: bool) -> str:
    """Make a certificate required (or not) for the institution's sign-ins; refused while the hub does not
    ask for certificates (`offered`: http.client_certificates), which would lock every user out. Returns
    the change, for the audit trail."""
    if required and not offered:
        raise Conflict(
            "the hub does not ask for client certificates (http.client_certificates is off, or http.tls): "
            "turn them on first, or nobody at the institution could sign in"
        )
    inst.require_certificate = required
    return "certificate required" if required else "certificate optional"
