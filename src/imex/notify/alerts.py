"""What people hear when a transfer ends: the destination's users that a study arrived, the source's that
one could not be delivered, in-app and by e-mail (without patient identifiers). Subscribed to the
delivery events, so the alerts commit with the change that caused them."""

from __future__ import annotations

from sqlalchemy import Connection, select

from imex import events
from imex.db.models import institutions
from imex.notify import email, inbox


@events.on("transfer.delivered")
def delivered(conn: Connection, transfer_id: int, announce: bool = True) -> None:
    """A study arrived (its first delivery: a re-send after a confirmation round is not news)."""
    if announce:
        email.queue_transfer_alert(conn, transfer_id, delivered=True)
        inbox.queue_transfer_notice(conn, transfer_id, delivered=True)


@events.on("transfer.failed")
def failed(conn: Connection, transfer_id: int) -> None:
    """A transfer gave up, or its delivery was not confirmed."""
    email.queue_transfer_alert(conn, transfer_id, delivered=False)
    inbox.queue_transfer_notice(conn, transfer_id, delivered=False)


@events.on("quota.reached")
def quota_reached(conn: Connection, institution_id: int, used: int, quota: int) -> None:
    """The institution's contact hears that its studies are refused until some expire or the quota rises."""
    inst = conn.execute(
        select(institutions.c.name, institutions.c.ods_code, institutions.c.contact_email).where(
            institutions.c.id == institution_id
        )
    ).one()
    email.queue_email(
        conn,
        [inst.contact_email or ""],
        f"[imex] {inst.name} ({inst.ods_code}): storage quota reached, studies refused",
        f"The hub holds {used} bytes of studies from {inst.name}, its quota is {quota} bytes. "
        "New images from your nodes are refused (DICOM status A700) until studies expire or "
        "the hub's administrators raise the quota.\n",
    )
