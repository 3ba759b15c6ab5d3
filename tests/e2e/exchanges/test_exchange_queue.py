"""The exchange building blocks without a PACS to search: attachments judged by their bytes; a `push`
exchange of a study already at the hub is queued at once and one still to come is routed to the
exchange's destination when it arrives (not by the rules, not to quarantine), on SQLite and PostgreSQL;
the retrieval queue's claims, leases and retries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db import Database
from imex.db.models import Institution, Node, Retrieval, Study, Transfer, transactions
from imex.directory import add_institution, add_node
from imex.exchanges import attachments, retrievals
from imex.exchanges.transactions import TransactionError, open_transaction, overall_state, study_progress
from imex.samples import make_study


def test_attachments_are_judged_by_their_bytes() -> None:
    check = lambda name, data: attachments.check(name, data, max_bytes=1000)  # noqa: E731
    assert check("letter.pdf", b"%PDF-1.7 ...").content_type == "application/pdf"
    assert check("x-ray.PNG", b"\x89PNG\r\n\x1a\n....").content_type == "image/png"
    assert check("photo.jpeg", b"\xff\xd8\xff\xe0....").content_type == "image/jpeg"
    assert check("notes.txt", "Café: all fine.\n".encode()).content_type == "text/plain"
    assert check("../../etc/notes.txt", b"hello").filename == "notes.txt"
    assert check('a"b\r\n.txt', b"hello").filename == "ab.txt"
    for name, data in [
        ("letter.pdf", b"<html><body>hi</body></html>"),
        ("letter.pdf", b"  <!DOCTYPE html>"),
        ("setup.pdf", b"MZ\x90\x00" + b"\x00" * 20),
        ("notes.txt", b"\xff\xfe\x00bad"),
        ("image.svg", b"<svg onload=alert(1)>"),
        ("a.pdf", b""),
    ]:
        with pytest.raises(attachments.AttachmentRefused):
            check(name, data)
    with pytest.raises(attachments.AttachmentRefused, match="name it .pdf"):
        check("letter.txt", b"%PDF-1.4")
    with pytest.raises(attachments.AttachmentTooLarge):
        check("big.pdf", b"%PDF-" + b"0" * 1000)
    assert attachments.scan(b"x", "", 5) == "unscanned"
    assert attachments.scan(b"x", "true", 5) == "clean"
    with pytest.raises(attachments.AttachmentRefused, match="virus scanner refused"):
        attachments.scan(b"x", "false", 5)
    with pytest.raises(attachments.AttachmentRefused, match="could not check"):
        attachments.scan(b"x", "/nonexistent/scanner", 5)


def _push_exchange(hub, storescp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = storescp(aet="RYJPACS")
    register_hospitals(hub, dest_port=dest.port)
    first = make_study(tmp_path / "one", instances_per_series=3, accession="P1")
    later = make_study(tmp_path / "two", instances_per_series=2, accession="P2")
    assert peers.storescu(first, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0, 0]
    uid_first = str(dcmread(first[0], stop_before_pixels=True).StudyInstanceUID)
    uid_later = str(dcmread(later[0], stop_before_pixels=True).StudyInstanceUID)

    def state_of(uid: str) -> str | None:
        with hub.db.engine.connect() as conn:
            return conn.execute(select(Study.route_state).where(Study.study_uid == uid)).scalar()

    wait_until(lambda: state_of(uid_first) == "quarantined", message="no rule: quarantined")
    with hub.db.engine.begin() as conn:
        rjz = conn.execute(select(Institution.id).where(Institution.ods_code == "RJZ")).scalar_one()
        ryj = conn.execute(select(Institution.id).where(Institution.ods_code == "RYJ")).scalar_one()
        with pytest.raises(TransactionError):
            open_transaction(
                conn,
                kind="push",
                source_institution_id=rjz,
                destination_institution_id=rjz,
                sender_user_id=None,
                sender_name="x",
                study_uids=[uid_first],
            )
        with pytest.raises(TransactionError):
            open_transaction(
                conn,
                kind="push",
                source_institution_id=rjz,
                destination_institution_id=ryj,
                sender_user_id=None,
                sender_name="x",
                study_uids=[],
            )
        tid = open_transaction(
            conn,
            kind="push",
            source_institution_id=rjz,
            destination_institution_id=ryj,
            sender_user_id=None,
            sender_name="pacs manager",
            study_uids=[uid_first, uid_later],
            message="both",
            priority=50,
            recipient="Dr Who",
        )
    hub.work_queued.set()
    dest.wait_for(3, timeout=60)

    def tx_state() -> str:
        with hub.db.engine.connect() as conn:
            return overall_state(
                study_progress(conn, conn.execute(select(transactions).where(transactions.c.id == tid)).one())
            )

    assert tx_state() in ("retrieving", "sending", "delivered")  # the second study has not come yet
    assert peers.storescu(later, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]
    wait_until(lambda: tx_state() == "delivered", timeout=60, message="both studies delivered")
    assert state_of(uid_first) == "routed"  # out of quarantine: the exchange gave it a destination
    dest.wait_for(5, timeout=30)
    assert state_of(uid_later) == "routed"
    with hub.db.engine.connect() as conn:
        rows = conn.execute(select(Transfer.priority, Transfer.recipient, Transfer.reason)).all()
    assert [(r.priority, r.recipient) for r in rows] == [(50, "Dr Who"), (50, "Dr Who")]
    assert all(r.reason == f"exchange {tid}" for r in rows)
    assert [s for s, _, _ in transfer_states(hub)] == ["delivered", "delivered"]


@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")
def test_push_exchange_on_sqlite(make_config, start_hub, storescp, tmp_path: Path) -> None:
    _push_exchange(start_hub(make_config()), storescp, tmp_path)


@pytest.mark.postgres
@pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")
def test_push_exchange_on_postgres(make_config, start_hub, storescp, postgres_url, tmp_path: Path) -> None:
    _push_exchange(start_hub(make_config(database__url=postgres_url)), storescp, tmp_path)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_retrieval_queue_claims_leases_and_retries(backend: str, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'q.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    db.migrate()
    add_institution(db, "RJZ", "King's")
    add_node(db, "RJZ_PACS", "RJZPACS", "127.0.0.1", 104, "RJZ", query_retrieve=True)
    add_node(db, "RJZ_CT", "RJZCT", "127.0.0.1", 105, "RJZ")
    with db.engine.begin() as conn:
        pacs = conn.execute(select(Node.id).where(Node.name == "RJZ_PACS")).scalar_one()
        ct = conn.execute(select(Node.id).where(Node.name == "RJZ_CT")).scalar_one()
        with pytest.raises(retrievals.RetrievalError, match="may not query"):
            retrievals.enqueue(conn, node_id=ct, study_uid="1.2.3")
        with pytest.raises(retrievals.RetrievalError):
            retrievals.enqueue(conn, node_id=pacs, study_uid="1.2.3", purpose="steal")
        with pytest.raises(retrievals.RetrievalError):
            retrievals.enqueue(conn, node_id=pacs, study_uid="")
        rid = retrievals.enqueue(conn, node_id=pacs, study_uid="1.2.3", purpose="view")
    assert retrievals.claim(db, "w1", 30) == rid
    assert retrievals.claim(db, "w2", 30) is None  # claimed once only
    assert retrievals.reap_expired_leases(db) == 0
    with db.engine.begin() as conn:  # the worker died: its lease lapses
        conn.execute(update(Retrieval).values(lease_until=dt.datetime(2000, 1, 1)))
    assert retrievals.reap_expired_leases(db) == 1
    assert retrievals.claim(db, "w2", 30) == rid
    with db.engine.connect() as conn:
        assert conn.execute(select(Retrieval.attempts, Retrieval.claimed_by)).one() == (2, "w2")
    assert not retrievals.retry(db, rid)  # not failed: nothing to retry
    db.dispose()
