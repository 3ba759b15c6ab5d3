"""Helpers for the security tests: a deployment CA in a temp folder and a hub configured for TLS."""

from __future__ import annotations

from pathlib import Path

from imex.tls.ca import CertificateAuthority
from peers import free_port


def make_ca(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> CertificateAuthority:
    ca = CertificateAuthority(folder)
    ca.init(list(hosts))
    return ca


def tls_overrides(ca: CertificateAuthority, **extra: object) -> dict[str, object]:
    """make_config keywords for a hub using `ca` with a DICOM TLS listener on a free port."""
    return {"tls__ca_dir": str(ca.folder), "dicom__tls_port": free_port(), **extra}


def dcmtk_tls(ca: CertificateAuthority, name: str) -> list[str]:
    """dcmtk options to connect with NAME's key and certificate, trusting the CA."""
    return ["+tls", str(ca.key_path(name)), str(ca.cert_path(name)), "+cf", str(ca.ca_cert_path)]
