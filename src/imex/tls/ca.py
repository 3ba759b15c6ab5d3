"""A deployment's own certificate authority, kept in one folder (`tls.ca_dir`):

    ca.key, ca.crt          the CA (its key is readable by the owner only and never leaves the folder)
    issued/NAME.crt, .key   certificates issued to the hub ("hub") and to nodes, by name
    index.json              every certificate issued: serial, name, expiry, fingerprint, revocation
    crl.pem                 the revocation list the listeners check during each handshake

Nodes get a certificate whose common name is their node name; the DICOM listener accepts a calling
AE title over TLS only with its node's certificate. Keys are ECDSA P-256, signatures SHA-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HUB = "hub"
CA_DAYS = 3650
CERT_DAYS = 397
CRL_DAYS = 30


class CaError(ValueError):
    """The CA folder is missing or the request cannot be done; the message says what to do."""


@dataclass
class Issued:
    """One certificate the CA issued, as index.json keeps it."""

    name: str
    serial: int
    not_after: str  # ISO 8601 UTC
    fingerprint: str  # SHA-256 of the DER certificate, hex
    hosts: list[str]
    revoked_at: str | None = None

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.not_after)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _write_private(path: Path, data: bytes) -> None:
    """A key file created readable by its owner only (never world-readable, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: list[str], emails: Sequence[str] = ()) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class CertificateAuthority:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # -- paths ----------------------------------------------------------------------------------------
    @property
    def ca_cert_path(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.folder / "ca.key"

    @property
    def crl_path(self) -> Path:
        return self.folder / "crl.pem"

    def cert_path(self, name: str) -> Path:
        return self.folder / "issued" / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.folder / "issued" / f"{name}.key"

    @property
    def exists(self) -> bool:
        return self.ca_cert_path.is_file() and self.ca_key_path.is_file()

    # -- the CA ---------------------------------------------------------------------------------------
    def init(self, hub_hosts: list[str], organisation: str = "imex") -> Issued:
        """Create the CA and the hub's own certificate (for `hub_hosts`, the names nodes dial)."""
        if self.exists:
            raise CaError(f"a CA exists already in {self.folder}; issue certificates from it, or use another folder")
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} deployment CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        _write_private(self.ca_key_path, _key_pem(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._save_index([])
        self.write_crl()
        return self.issue(HUB, hub_hosts or ["localhost"])

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self.exists:
            raise CaError(f"no CA in {self.folder}: create one with `imex tls init`")
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    # -- index ----------------------------------------------------------------------------------------
    def _index_path(self) -> Path:
        return self.folder / "index.json"

    def certificates(self) -> list[Issued]:
        """Every certificate issued, oldest first."""
        if not self._index_path().is_file():
            return []
        return [Issued(**row) for row in json.loads(self._index_path().read_text())]

    def _save_index(self, rows: list[Issued]) -> None:
        tmp = self._index_path().with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in rows], indent=1))
        tmp.replace(self._index_path())

    def current(self, name: str) -> Issued | None:
        """The newest unrevoked certificate issued to `name`."""
        live = [c for c in self.certificates() if c.name == name and c.revoked_at is None]
        return live[-1] if live else None

    # -- issue and revoke -----------------------------------------------------------------------------
    def issue(self, name: str, hosts: list[str], days: int = CERT_DAYS, emails: Sequence[str] = ()) -> Issued:
        """A key and certificate for a node (or the hub) called `name`, usable as client and server; an
        earlier certificate of the same name is revoked (superseded). `emails` go into the subject
        alternative name (a person's certificate for certificate sign-in on the HTTPS port)."""
        if not _NAME_RE.match(name):
            raise CaError(f"name {name!r} must be 1-64 letters, digits, dots, dashes or underscores")
        wanted = [e.strip() for e in emails if e.strip()]
        for email in wanted:
            if not re.fullmatch(r"[^@\s,=]+@[^@\s,=]+", email):
                raise CaError(f"{email!r} is not an e-mail address")
        ca_cert, ca_key = self._ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        hosts = [h for h in dict.fromkeys(h.strip() for h in hosts) if h]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if hosts or wanted:
            builder = builder.add_extension(_san(hosts, wanted), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        rows = self.certificates()
        stamp = now.replace(microsecond=0).isoformat()
        for row in rows:
            if row.name == name and row.revoked_at is None:
                row.revoked_at = stamp
        issued = Issued(name, cert.serial_number, cert.not_valid_after_utc.isoformat(), fingerprint(cert), hosts)
        rows.append(issued)
        _write_private(self.key_path(name), _key_pem(key))
        self.cert_path(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._save_index(rows)
        self.write_crl()
        return issued

    def revoke(self, name: str) -> list[Issued]:
        """Revoke every live certificate of `name`; the CRL is rewritten so listeners refuse it at once."""
        rows = self.certificates()
        stamp = _now().replace(microsecond=0).isoformat()
        revoked = [r for r in rows if r.name == name and r.revoked_at is None]
        if not revoked:
            raise CaError(f"no live certificate named {name}; `imex tls list` shows them")
        for row in revoked:
            row.revoked_at = stamp
        self._save_index(rows)
        self.write_crl()
        return revoked

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        """Sign a fresh CRL listing every revoked serial (valid `days`; the hub renews it daily)."""
        ca_cert, ca_key = self._ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for row in self.certificates():
            if row.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(row.serial)
                    .revocation_date(dt.datetime.fromisoformat(row.revoked_at))
                    .build()
                )
        crl = builder.sign(ca_key, hashes.SHA256())
        tmp = self.crl_path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        tmp.replace(self.crl_path)
        return self.crl_path

    def crl_next_update(self) -> dt.datetime | None:
        if not self.crl_path.is_file():
            return None
        return x509.load_pem_x509_crl(self.crl_path.read_bytes()).next_update_utc
