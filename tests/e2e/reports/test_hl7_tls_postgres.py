"""MLLP over TLS (a certificate made for the test), and the report path on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from hl7tools import register_ris, sample, variant
from hubtools import register_hospitals
from imex.db.models import reports
from imex.hl7 import client


def _certificate(folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_mllp_over_tls(make_config, start_hub, tmp_path):
    cert, key = _certificate(tmp_path)
    hub = start_hub(make_config(hl7__tls_cert=cert, hl7__tls_key=key))
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)
    answer = client.send("localhost", hub.reports.port, sample("oru_v23_final.hl7"), tls=True, ca_file=cert)
    assert answer.code == "AA"
    with pytest.raises(client.MllpError):  # plain TCP to a TLS listener gets no answer
        client.send("127.0.0.1", hub.reports.port, sample("oru_v251_escaped.hl7"), timeout=5)
    answer = client.send("localhost", hub.reports.port, variant("oru_v23_final.hl7", "T2"), tls=True, ca_file=cert)
    assert answer.code == "AA"


@pytest.mark.postgres
def test_reports_on_postgres(postgres_url, make_config, start_hub):
    hub = start_hub(make_config(database__url=postgres_url))
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)
    for name in ("oru_v23_final.hl7", "oru_v251_corrected.hl7", "oru_v251_escaped.hl7"):
        assert client.send("127.0.0.1", hub.reports.port, sample(name)).code == "AA"
    assert client.send("127.0.0.1", hub.reports.port, sample("oru_v23_final.hl7")).code == "AA"  # resent
    with hub.db.engine.connect() as conn:
        rows = conn.execute(select(reports.c.control_id, reports.c.superseded_by).order_by(reports.c.id)).all()
    assert [(r.control_id, r.superseded_by is not None) for r in rows] == [
        ("RJZ0001", True),
        ("RJZ0003", False),
        ("RJZ0002", False),
    ]
