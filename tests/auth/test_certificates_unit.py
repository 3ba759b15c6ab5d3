"""Certificate identities and the second look at revocation, without a hub: canonical subjects, the
identities a certificate offers, the revocation and validity check at sign-in (for resumed TLS sessions),
the ASGI TLS extension, and the HTTPS context that follows a new CRL."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from pathlib import Path

import pytest

from imex.auth import certificates
from imex.auth.accounts import AccountError
from imex.config import load
from imex.tls import client_certs, files
from imex.tls.ca import CertificateAuthority
from imex.tls.client_certs import PeerCertificate, Trust


def _peer(ca: CertificateAuthority, name: str) -> PeerCertificate:
    return PeerCertificate.from_pem(ca.cert_path(name).read_text())


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    authority = CertificateAuthority(tmp_path / "ca")
    authority.init(["localhost"])
    return authority


def test_subjects_and_addresses_are_stored_in_one_canonical_form():
    assert certificates.canonical("CN=Jane Smith,O=Kings,C=GB") == "cn=jane smith,o=kings,c=gb"
    assert certificates.canonical(" cn=Jane Smith, O=Kings , c=GB ") == "cn=jane smith,o=kings,c=gb"
    assert (
        certificates.canonical("E=j.smith@kings.example,CN=Jane")
        == "1.2.840.113549.1.9.1=j.smith@kings.example,cn=jane"
    )
    assert certificates.canonical("CN=Smith\\, Jane,O=Kings") == "cn=smith\\, jane,o=kings"
    assert certificates.canonical("J.Smith@Kings.Example") == "j.smith@kings.example"
    for bad in ("", "   ", "Jane Smith", "CN", "=x", "CN=" + "x" * 400):
        with pytest.raises(AccountError):
            certificates.canonical(bad)


def test_a_certificate_offers_its_subject_then_its_addresses(ca: CertificateAuthority):
    ca.issue("jsmith-card", [], emails=["J.Smith@Kings.example", "jane@home.example"])
    peer = _peer(ca, "jsmith-card")
    assert peer.subject == "CN=jsmith-card" and peer.emails == ("J.Smith@Kings.example", "jane@home.example")
    assert certificates.identities(peer) == ["cn=jsmith-card", "j.smith@kings.example", "jane@home.example"]
    assert certificates.subject_of_file(ca.cert_path("jsmith-card").read_bytes()) == "cn=jsmith-card"
    der = ssl.PEM_cert_to_DER_cert(ca.cert_path("jsmith-card").read_text())
    assert certificates.subject_of_file(der) == "cn=jsmith-card"
    with pytest.raises(AccountError):
        certificates.subject_of_file(b"not a certificate")


def test_sign_in_checks_the_current_crl_and_validity_again(ca: CertificateAuthority):
    """A TLS session resumed after a revocation still carries the certificate verified when it began: the
    sign-in itself refuses it by the CRL as it is now."""
    ca.issue("jsmith-card", [])
    peer = _peer(ca, "jsmith-card")
    trust = Trust(ca.ca_cert_path, ca.crl_path)
    assert client_certs.problem(peer, trust) == ""
    time.sleep(0.01)  # a new modification time for the CRL file
    ca.revoke("jsmith-card")
    assert client_certs.problem(peer, trust) == "the certificate has been revoked"
    later = peer.not_after + dt.timedelta(days=1)
    assert client_certs.problem(peer, trust, now=later) == "the certificate has expired"
    lapsed = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)  # past the CRL's next update, within validity
    assert "lapsed" in client_certs.problem(peer, trust, now=lapsed)
    assert "no revocation list" in client_certs.problem(peer, Trust(ca.ca_cert_path, ca.folder / "missing.pem"))
    # another CA with the same name: its CRL says nothing about this certificate, nor does it vouch for it
    other = CertificateAuthority(ca.folder.parent / "other")
    other.init(["localhost"])
    assert "no revocation list" in client_certs.problem(peer, Trust(ca.ca_cert_path, other.crl_path))
    assert "not issued by the client CA" in client_certs.problem(peer, Trust(other.ca_cert_path, other.crl_path))


def test_asgi_tls_extension_carries_the_verified_certificate(ca: CertificateAuthority):
    ca.issue("jsmith-card", [])

    class Handshake:
        def getpeercert(self, binary_form: bool = False) -> bytes:
            return ssl.PEM_cert_to_DER_cert(ca.cert_path("jsmith-card").read_text())

        def version(self) -> str:
            return "TLSv1.3"

    extension = client_certs.asgi_tls_extension(Handshake())
    assert extension["client_cert_name"] == "CN=jsmith-card" and extension["tls_version"] == 0x0304
    assert client_certs.from_scope({"extensions": {"tls": extension}}) == _peer(ca, "jsmith-card")
    assert client_certs.from_scope({"headers": []}) is None


def test_client_certificates_need_https_and_a_known_mode(tmp_path: Path, ca: CertificateAuthority):
    config = load(path=None, env={"IMEX_DATA_DIR": str(tmp_path), "IMEX_TLS_CA_DIR": str(ca.folder)})
    assert not client_certs.requested(config)
    with pytest.raises(ValueError, match="needs http.tls"):
        files.check(config.with_values(http__client_certificates="optional"))
    with pytest.raises(ValueError, match="must be one of off, optional"):
        files.check(config.with_values(http__tls=True, http__client_certificates="required"))
    on = config.with_values(http__tls=True, http__client_certificates="optional")
    assert client_certs.requested(on)
    files.check(on)
    ca.crl_path.unlink()  # revocation must be checkable
    with pytest.raises(ValueError, match="revocation list"):
        files.check(on)


def test_the_https_context_switches_to_a_new_crl_at_each_handshake(ca: CertificateAuthority):
    ca.issue("jsmith-card", [])
    server = files.ServerContext(
        ca.cert_path("hub"), ca.key_path("hub"), client_ca=ca.ca_cert_path, crl=ca.crl_path
    ).switching()

    def handshake() -> bool:
        client = ssl.create_default_context(cafile=str(ca.ca_cert_path))
        client.load_cert_chain(ca.cert_path("jsmith-card"), ca.key_path("jsmith-card"))
        client.maximum_version = ssl.TLSVersion.TLSv1_2  # the client's certificate is checked within the handshake
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        near = client.wrap_bio(c_in, c_out, server_hostname="localhost")
        far = server.wrap_bio(s_in, s_out, server_side=True)
        done = [False, False]
        for _ in range(10):
            for i, (end, out, peer_in) in enumerate(((near, c_out, s_in), (far, s_out, c_in))):
                try:
                    if not done[i]:
                        end.do_handshake()
                        done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return False
                peer_in.write(out.read())
        return all(done)

    assert handshake()
    time.sleep(0.01)
    ca.revoke("jsmith-card")
    assert not handshake()  # the same front context, the new CRL
