"""Pre-authorised transfer through the API, with real peers: two Orthanc instances are the PACS of King's
(RJZ) and Imperial (RYJ). King's sender searches their PACS through the hub, sends two studies to
Imperial as one exchange with a message and a PDF; both arrive in Imperial's Orthanc, the exchange shows
delivered, and Imperial's users read the message and download the PDF. Then hostile input: other
institutions' ids, oversize and disguised attachments, the scanning hook, missing CSRF, another
institution's PACS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

import exchangetools as xt
import peers
from imex.db.models import AuditEvent, Notification, TransactionAttachment, User
from portaltools import base_url, bearer, browser

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def test_preauthorised_exchange_through_the_api(make_config, start_hub, tmp_path: Path) -> None:
    _exchange(
        start_hub,
        make_config(exchange__scan_command=xt.scanner_script(tmp_path), exchange__max_attachment_bytes=200_000),
        tmp_path,
    )


@pytest.mark.postgres
def test_preauthorised_exchange_on_postgres(make_config, start_hub, postgres_url, tmp_path: Path) -> None:
    _exchange(
        start_hub,
        make_config(
            exchange__scan_command=xt.scanner_script(tmp_path),
            exchange__max_attachment_bytes=200_000,
            database__url=postgres_url,
        ),
        tmp_path,
    )


def _exchange(start_hub, config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(config)
    hub_port = hub.config["dicom.port"]
    with (
        peers.Orthanc(tmp_path / "a", aet="RJZPACS", modalities={"HUB": (xt.HUB_AET, "127.0.0.1", hub_port)}) as a,
        peers.Orthanc(tmp_path / "b", aet="RYJPACS") as b,
    ):
        node_a = xt.register(hub.db, a, b)
        hub.nodes.invalidate()
        xt.add_people(hub)
        made = xt.make_studies(tmp_path / "studies")
        for paths in made:
            for path in paths:
                a.upload(path)

        alice = browser(hub, "alice")
        assert [n["name"] for n in alice.get("/api/v1/pacs/nodes").json()] == ["RJZ_PACS"]
        found = alice.get(f"/api/v1/pacs/{node_a}/studies", params={"patient_id": xt.PATIENT}).json()["items"]
        assert sorted(s["accession"] for s in found) == ["ACC1", "ACC2"]
        ct = next(s for s in found if s["accession"] == "ACC1")
        series = alice.get(f"/api/v1/pacs/{node_a}/studies/{ct['study_uid']}/series").json()["items"]
        assert sorted(x["images"] for x in series) == [3, 3]
        assert (
            alice.get(f"/api/v1/pacs/{node_a}/studies", params={"modality": "CR"}).json()["items"][0]["accession"]
            == "ACC3"
        )

        sent = alice.post(
            f"/api/v1/pacs/{node_a}/send",
            json={
                "study_uids": [s["study_uid"] for s in found],
                "destination": "RYJ",
                "priority": "urgent",
                "recipient": "Dr Patel, neurosurgery",
                "recipient_user": "rita",
                "subject": "Head injury transfer",
                "message": "Two studies for tomorrow's MDT.",
            },
        )
        assert sent.status_code == 201, sent.text
        tid = sent.json()["id"]
        pdf = xt.pdf_bytes("Referral for DOE")
        up = alice.post(
            "/api/v1/attachments",
            data={"transaction_id": str(tid)},
            files={"file": ("referral.pdf", pdf, "application/pdf")},
        )
        assert up.status_code == 201, up.text
        assert up.json()["scan_state"] == "clean" and up.json()["content_type"] == "application/pdf"
        aid = up.json()["id"]

        done = xt.wait_state(alice, tid, "delivered", timeout=120)
        assert [s["state"] for s in done["studies"]] == ["delivered", "delivered"]
        wanted = {**xt.pixels_by_sop(made[0]), **xt.pixels_by_sop(made[1])}
        assert xt.received_pixels(b) == wanted  # every instance of both studies, same pixels, nothing else

        # Imperial: the viewer sees it incoming, with the message and the PDF
        bob = browser(hub, "bob")
        listed = bob.get("/api/v1/transactions", params={"direction": "incoming"}).json()
        assert [t["id"] for t in listed["items"]] == [tid] and listed["items"][0]["state"] == "delivered"
        detail = bob.get(f"/api/v1/transactions/{tid}").json()
        assert detail["messages"][0]["body"] == "Two studies for tomorrow's MDT."
        assert {s["accession"] for s in detail["studies"]} == {"ACC1", "ACC2"}
        got = bob.get(f"/api/v1/attachments/{aid}")
        assert got.status_code == 200 and got.content == pdf
        assert got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith("attachment;")
        # the reply reaches King's sender in the app and by e-mail (no patient identifiers in it)
        assert (
            bob.post(f"/api/v1/transactions/{tid}/messages", json={"body": "Received, thank you."}).status_code == 201
        )
        with hub.db.sessions() as s:
            alice_id = s.scalar(select(User.id).where(User.username == "alice"))
            rita_id = s.scalar(select(User.id).where(User.username == "rita"))
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.user_id == alice_id, Notification.link == f"/exchanges/{tid}")
                )
                >= 1
            )
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.user_id == rita_id, Notification.link == f"/exchanges/{tid}")
                )
                >= 1
            )
            from imex.db.models import Email

            mails = s.scalars(select(Email).where(Email.recipient == "alice@rjz.example")).all()
            assert mails and all(
                "DOE" not in m.body + m.subject and xt.PATIENT not in m.body + m.subject for m in mails
            )
        assert [m["body"] for m in alice.get(f"/api/v1/transactions/{tid}").json()["messages"]] == [
            "Two studies for tomorrow's MDT.",
            "Received, thank you.",
        ]

        # the bearer-token API sees the same
        assert bearer(hub, "rita").get(f"/api/v1/transactions/{tid}").json()["state"] == "delivered"

        # -- hostile --------------------------------------------------------------------------------------
        carol = browser(hub, "carol")
        assert carol.get(f"/api/v1/transactions/{tid}").status_code == 404
        assert carol.get(f"/api/v1/transactions/{tid}/progress").status_code == 404
        assert carol.get(f"/api/v1/attachments/{aid}").status_code == 404
        assert carol.post(f"/api/v1/transactions/{tid}/messages", json={"body": "hi"}).status_code == 404
        assert (
            carol.post(
                "/api/v1/attachments",
                data={"transaction_id": str(tid)},
                files={"file": ("x.pdf", pdf, "application/pdf")},
            ).status_code
            == 404
        )
        assert carol.get("/api/v1/transactions").json()["items"] == []
        assert carol.get(f"/api/v1/pacs/{node_a}/studies", params={"patient_id": xt.PATIENT}).status_code == 404
        assert (
            carol.post(
                f"/api/v1/pacs/{node_a}/send", json={"study_uids": [ct["study_uid"]], "destination": "RXX"}
            ).status_code
            == 404
        )
        assert bob.get(f"/api/v1/pacs/{node_a}/studies", params={"patient_id": xt.PATIENT}).status_code == 403
        assert carol.get("/api/v1/attachments/999999").status_code == 404

        def refused(name: str, data: bytes, kind: str = "application/pdf") -> httpx.Response:
            return alice.post(
                "/api/v1/attachments", data={"transaction_id": str(tid)}, files={"file": (name, data, kind)}
            )

        big = refused("scan.pdf", b"%PDF-1.4\n" + b"0" * 250_000)
        assert big.status_code == 413 and "at most" in big.json()["detail"]
        html = refused("letter.pdf", b"<!DOCTYPE html><html><script>alert(1)</script></html>")
        assert html.status_code == 415 and "not a PDF" in html.json()["detail"]
        exe = refused("report.pdf", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 64)
        assert exe.status_code == 415
        mismatch = refused("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png")
        assert mismatch.status_code == 415 and "name it .png" in mismatch.json()["detail"]
        virus = refused(
            "notes.txt", b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*", "text/plain"
        )
        assert virus.status_code == 415 and "virus scanner refused" in virus.json()["detail"]
        assert refused("empty.pdf", b"").status_code == 415
        # no CSRF token: refused, nothing posted
        naked = httpx.Client(base_url=base_url(hub), cookies=alice.cookies, timeout=15)
        assert naked.post(f"/api/v1/transactions/{tid}/messages", json={"body": "forged"}).status_code == 403
        assert (
            naked.post(
                "/api/v1/attachments",
                data={"transaction_id": str(tid)},
                files={"file": ("a.pdf", pdf, "application/pdf")},
            ).status_code
            == 403
        )
        assert (
            naked.post(
                f"/api/v1/pacs/{node_a}/send", json={"study_uids": [ct["study_uid"]], "destination": "RYJ"}
            ).status_code
            == 403
        )
        # malformed input
        assert (
            alice.post(
                f"/api/v1/pacs/{node_a}/send", json={"study_uids": ["1.2'; DROP"], "destination": "RYJ"}
            ).status_code
            == 422
        )
        assert (
            alice.post(
                f"/api/v1/pacs/{node_a}/send", json={"study_uids": [ct["study_uid"]], "destination": "RJZ"}
            ).status_code
            == 422
        )
        assert alice.get(f"/api/v1/pacs/{node_a}/studies").status_code == 422
        assert alice.get(f"/api/v1/pacs/{node_a}/studies", params={"birth_date": "yesterday"}).status_code == 422
        assert alice.get("/api/v1/transactions/99999999999").status_code == 422

        with hub.db.sessions() as s:
            assert s.scalar(select(func.count()).select_from(TransactionAttachment)) == 1
            denied = s.scalars(
                select(AuditEvent.object_type).where(AuditEvent.username == "carol", AuditEvent.outcome == "denied")
            ).all()
            assert {"transaction", "attachment", "node"} <= set(denied)
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.action == "pacs.search", AuditEvent.username == "alice")
                )
                >= 3
            )
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(AuditEvent)
                    .where(AuditEvent.action == "exchange.attachment.download", AuditEvent.username == "bob")
                )
                == 1
            )
