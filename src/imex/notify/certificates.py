"""Certificates that will expire soon: the hub's own, its CA's and every live certificate the CA issued.
`imex serve` checks hourly, alerts system admins (portal bell and e-mail, at most once a day per
certificate) and renews the CRL before it lapses, since listeners refuse every node once it has."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import Connection, select

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import notifications, role_grants, roles, users
from imex.notify.email import queue_email
from imex.tls.ca import CertificateAuthority
from imex.tls.files import TlsFiles

log = logging.getLogger("imex.tls")
KIND = "tls.expiring"


@dataclass(frozen=True)
class Expiring:
    name: str
    path: str
    expires: dt.datetime  # aware UTC

    def days_left(self, now: dt.datetime) -> int:
        return (self.expires - now).days


def _load(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def expiring(config: Config, now: dt.datetime | None = None) -> list[Expiring]:
    """Certificates in use that expire within tls.expiry_warning_days (or have expired)."""
    now = now or dt.datetime.now(dt.UTC)
    horizon = now + dt.timedelta(days=config["tls.expiry_warning_days"])
    files = TlsFiles.of(config)
    found: dict[str, Expiring] = {}
    for name, path in (("hub certificate", files.cert), ("CA certificate", files.ca)):
        cert = _load(path)
        if cert is not None and cert.not_valid_after_utc <= horizon:
            found[str(path)] = Expiring(name, str(path), cert.not_valid_after_utc)
    ca = CertificateAuthority(files.ca_dir)
    for issued in ca.certificates():
        if issued.revoked_at is None and issued.expires <= horizon:
            issued_path = str(ca.cert_path(issued.name))
            found.setdefault(issued_path, Expiring(f"certificate of {issued.name}", issued_path, issued.expires))
    return sorted(found.values(), key=lambda e: e.expires)


def _admins(conn: Connection) -> list:
    rows = conn.execute(
        select(users.c.id, users.c.email, roles.c.permissions)
        .join(role_grants, role_grants.c.user_id == users.c.id)
        .join(roles, roles.c.id == role_grants.c.role_id)
        .where(users.c.disabled.is_(False))
    ).all()
    return list({r.id: r for r in rows if "system.admin" in r.permissions.split()}.values())


def alert(db: Database, config: Config) -> int:
    """Notify system admins of each expiring certificate not announced in the last day; returns how many
    alerts were raised."""
    now = dt.datetime.now(dt.UTC)
    raised = 0
    with db.engine.begin() as conn:
        admins = _admins(conn)
        for item in expiring(config, now):
            left = item.days_left(now)
            title = (
                f"TLS: the {item.name} expired on {item.expires:%Y-%m-%d}"
                if left < 0
                else f"TLS: the {item.name} expires on {item.expires:%Y-%m-%d} ({left} days)"
            )
            log.warning("%s (%s); renew it with `imex tls issue`", title, item.path)
            recent = conn.execute(
                select(notifications.c.id)
                .where(
                    notifications.c.kind == KIND,
                    notifications.c.title == title[:200],
                    notifications.c.at > utcnow() - dt.timedelta(hours=23),
                )
                .limit(1)
            ).first()
            if recent is not None or not admins:
                continue
            for admin in admins:
                conn.execute(
                    notifications.insert().values(
                        user_id=admin.id, at=utcnow(), kind=KIND, title=title[:200], link="/admin"
                    )
                )
            queue_email(
                conn,
                [a.email for a in admins if a.email],
                title,
                f"{title}.\n\nFile: {item.path}\nRenew it with `imex tls issue NAME` and install the new "
                "certificate before the old one expires, or the connections that use it will fail.\n",
            )
            raised += 1
    return raised


def renew_crl(config: Config) -> bool:
    """Re-sign the CRL when less than a third of its validity is left (only where the CA key is)."""
    ca = CertificateAuthority(TlsFiles.of(config).ca_dir)
    if not ca.exists:
        return False
    next_update = ca.crl_next_update()
    if next_update is not None and next_update - dt.datetime.now(dt.UTC) > dt.timedelta(days=10):
        return False
    ca.write_crl()
    log.info("renewed the certificate revocation list %s", ca.crl_path)
    return True


def check(db: Database, config: Config) -> None:
    """The hourly job of `imex serve`."""
    renew_crl(config)
    alert(db, config)
