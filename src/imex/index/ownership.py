"""Whose study an arriving instance may change: the rule every path that creates or changes index rows
follows (C-STORE, STOW-RS, uploads, C-MOVE retrievals, the locator's view cache all store through
imex.index.ingest, which asks here).

- A study at the hub is its owner's: the institution whose node first sent it. Only the owner's nodes add
  instances to it or send new versions of its instances.
- An institution the hub delivered the study to may send it on (A -> B -> C, the same UIDs): its instances
  are taken as the ones it received, whatever their bytes (its copy was harmonised for it), and the owner's
  copy never changes; what the forwarder asked for (the called AE title naming a destination) is announced as
  `study.forwarded` so the study goes on from the hub's own copy. A forwarder cannot add instances to it.
- Anything else is refused (DICOM 0x0124 Not Authorized, with an ErrorComment saying why): another
  institution's node sending an instance with a Study, Series or SOP Instance UID the hub holds in an
  institution's study. Nothing of such an instance is stored or indexed.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, exists, select

from imex.db.models import instances, nodes, studies, transfers
from imex.errors import Forbidden

DELIVERED = ("delivered", "confirmed")


class NotYourStudy(Forbidden):
    """An instance would change a study that belongs to another institution; the message says which UID, the
    comment (at most 64 characters: a DICOM ErrorComment) says why."""

    def __init__(self, message: str, comment: str = "study belongs to another institution at the hub") -> None:
        super().__init__(message)
        self.comment = comment[:64]


def owner(conn: Connection, study_uid: str) -> tuple[int, int] | None:
    """(study id, owning institution id) of the study with this UID at the hub, if any."""
    row = conn.execute(select(studies.c.id, studies.c.institution_id).where(studies.c.study_uid == study_uid)).first()
    return (int(row.id), int(row.institution_id)) if row is not None else None


def received_by(conn: Connection, study_id: int, institution_id: int) -> bool:
    """Whether the hub delivered the study to one of the institution's nodes (it may send it on)."""
    return bool(
        conn.execute(
            select(
                exists().where(
                    and_(
                        transfers.c.study_id == study_id,
                        transfers.c.state.in_(DELIVERED),
                        transfers.c.destination_node_id.in_(
                            select(nodes.c.id).where(nodes.c.institution_id == institution_id)
                        ),
                    )
                )
            )
        ).scalar()
    )


def check_forward(conn: Connection, study_id: int, study_uid: str, sop_uid: str, institution_id: int) -> int:
    """The owner's instance a forwarder's instance stands for (its id), or NotYourStudy."""
    if not received_by(conn, study_id, institution_id):
        raise NotYourStudy(
            f"study {study_uid[:64]} is held at the hub for another institution; a node may "
            "add to or replace only its own institution's studies"
        )
    held = conn.execute(
        select(instances.c.id).where(instances.c.study_id == study_id, instances.c.sop_uid == sop_uid)
    ).scalar()
    if held is None:
        raise NotYourStudy(
            f"study {study_uid[:64]} belongs to another institution: it may be sent on as it was "
            f"received, but instance {sop_uid[:64]} is not part of it",
            "cannot add to a study of another institution",
        )
    return int(held)


def refuse_series(series_uid: str) -> NotYourStudy:
    return NotYourStudy(
        f"series {series_uid[:64]} belongs to another study at the hub; a series UID cannot be reused in another study",
        "series UID belongs to another study at the hub",
    )


def refuse_instance(sop_uid: str) -> NotYourStudy:
    return NotYourStudy(
        f"SOP instance {sop_uid[:64]} belongs to another study at the hub; an instance cannot "
        "be moved between studies or institutions",
        "SOP instance UID belongs to another study",
    )
