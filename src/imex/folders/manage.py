"""Creating folders, choosing who takes part, and filing studies into them (by called AE title, from the
portal or from a transfer); the retention pass takes studies out when their time in the folder is up."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from imex import audit, events
from imex.db import Database, utcnow
from imex.db.models import (
    folder_institutions,
    folder_members,
    folder_studies,
    folders,
    institutions,
    nodes,
    patients,
    studies,
    users,
)
from imex.errors import Conflict, Invalid
from imex.retention.policy import keep_until

KINDS = {"emergency": 18, "elective": 192}  # kind -> default hours a study stays
_AET = re.compile(r"^[A-Z0-9_\-. ]{1,16}$")


class FolderError(Invalid, ValueError):
    """A folder request that cannot be done; the message says why."""


class FolderExists(FolderError, Conflict):
    """The folder's name or alias is in use already; choose another."""


def add_folder(
    db: Database,
    name: str,
    kind: str,
    *,
    alias: str | None = None,
    hours: int | None = None,
    institutions_ods: Sequence[str] = (),
    owner_ods: str | None = None,
    description: str = "",
) -> int:
    name = name.strip()
    if not re.match(r"^[A-Za-z0-9_\-. ]{1,64}$", name):
        raise FolderError("a folder name is 1-64 letters, digits, spaces, '.', '_' or '-'")
    if kind not in KINDS:
        raise FolderError(f"a folder is emergency or elective, not {kind!r}")
    hours = KINDS[kind] if hours is None else hours
    if hours <= 0:
        raise FolderError("a folder keeps studies for a positive number of hours")
    alias = alias.strip().upper() if alias else None
    with db.engine.begin() as conn:
        if conn.execute(select(folders.c.id).where(folders.c.name == name)).first():
            raise FolderExists(f"a folder named {name!r} exists already")
        if alias:
            if not _AET.match(alias):
                raise FolderError(f"alias {alias!r} is not an AE title (1-16 letters, digits, space, _ - .)")
            clash = (
                conn.execute(select(nodes.c.name).where((nodes.c.alias == alias) | (nodes.c.ae_title == alias))).first()
                or conn.execute(
                    select(institutions.c.ods_code).where(
                        (institutions.c.alias == alias) | (institutions.c.ods_code == alias)
                    )
                ).first()
                or conn.execute(select(folders.c.name).where(folders.c.alias == alias)).first()
            )
            if clash:
                raise FolderExists(f"alias {alias} is already used by {clash[0]}")
        owner = _institution(conn, owner_ods) if owner_ods else None
        folder_id = conn.execute(
            insert(folders)
            .values(
                name=name,
                kind=kind,
                alias=alias,
                retention_hours=hours,
                owner_institution_id=owner,
                description=description[:200],
                created_at=utcnow(),
            )
            .returning(folders.c.id)
        ).scalar_one()
        for ods in dict.fromkeys([*institutions_ods, *([owner_ods] if owner_ods else [])]):
            conn.execute(
                insert(folder_institutions).values(folder_id=folder_id, institution_id=_institution(conn, ods))
            )
    return int(folder_id)


def _institution(conn: Connection, ods: str) -> int:
    found = conn.execute(select(institutions.c.id).where(institutions.c.ods_code == ods.strip().upper())).scalar()
    if found is None:
        raise FolderError(f"no institution has the ODS code {ods!r}")
    return int(found)


def set_participation(conn: Connection, folder_id: int, institution_id: int, taking_part: bool) -> None:
    exists = conn.execute(
        select(folder_institutions.c.id).where(
            folder_institutions.c.folder_id == folder_id, folder_institutions.c.institution_id == institution_id
        )
    ).first()
    if taking_part and exists is None:
        conn.execute(insert(folder_institutions).values(folder_id=folder_id, institution_id=institution_id))
    elif not taking_part and exists is not None:
        conn.execute(delete(folder_institutions).where(folder_institutions.c.id == exists.id))
        # its users leave the folder with it
        conn.execute(
            delete(folder_members).where(
                folder_members.c.folder_id == folder_id,
                folder_members.c.user_id.in_(select(users.c.id).where(users.c.institution_id == institution_id)),
            )
        )


def set_member(conn: Connection, folder_id: int, user_id: int, member: bool) -> None:
    row = conn.execute(select(users.c.institution_id).where(users.c.id == user_id)).first()
    if row is None:
        raise FolderError(f"no user {user_id}")
    taking_part = conn.execute(
        select(folder_institutions.c.id).where(
            folder_institutions.c.folder_id == folder_id, folder_institutions.c.institution_id == row.institution_id
        )
    ).first()
    exists = conn.execute(
        select(folder_members.c.id).where(folder_members.c.folder_id == folder_id, folder_members.c.user_id == user_id)
    ).first()
    if member and exists is None:
        if taking_part is None:
            raise FolderError("the user's institution does not take part in this folder")
        conn.execute(insert(folder_members).values(folder_id=folder_id, user_id=user_id))
    elif not member and exists is not None:
        conn.execute(delete(folder_members).where(folder_members.c.id == exists.id))


def file_study(
    conn: Connection, folder_id: int, study_id: int, who: str, now: dt.datetime | None = None
) -> dt.datetime:
    """Put a study into a folder (again: it keeps its first expiry) and make sure the hub keeps the study at
    least that long; returns when it leaves the folder."""
    now = now or utcnow()
    existing = conn.execute(
        select(folder_studies.c.expires_at).where(
            folder_studies.c.folder_id == folder_id, folder_studies.c.study_id == study_id
        )
    ).scalar()
    if existing is not None:
        return existing
    folder = conn.execute(select(folders).where(folders.c.id == folder_id)).one()
    until = now + dt.timedelta(hours=folder.retention_hours)
    conn.execute(
        insert(folder_studies).values(
            folder_id=folder_id, study_id=study_id, added_at=now, added_by=who[:64], expires_at=until
        )
    )
    keep_until(conn, study_id, until)
    current = conn.execute(
        select(studies.c.study_uid, patients.c.patient_id)
        .join(patients, patients.c.id == studies.c.patient_pk)
        .where(studies.c.id == study_id)
    ).one()
    audit.record(
        conn,
        "folder.add",
        username=who[:64],
        study_uid=current.study_uid,
        patient_id=current.patient_id,
        object_type="folder",
        object_id=folder.name,
        detail=f"in {folder.kind} folder {folder.name} until {until:%Y-%m-%d %H:%M} UTC",
    )
    return until


@events.on("study.filing")
def file_by_alias(conn: Connection, study_id: int, names: set[str], who: str) -> list[str]:
    """File a study into the folders named (by alias, the called AE title it was sent to, or by name, as a
    routing rule's `to` may); their names."""
    if not names:
        return []
    from sqlalchemy import func, or_

    upper = [n.upper() for n in names]
    found = conn.execute(
        select(folders.c.id, folders.c.name).where(
            or_(folders.c.alias.in_(upper), func.upper(folders.c.name).in_(upper))
        )
    ).all()
    for folder in found:
        file_study(conn, folder.id, study_id, who)
    return [f.name for f in found]


@events.on("retention.pass")
def expire_entries(conn: Connection, now: dt.datetime) -> int:
    """Take studies out of folders when their time there is up (audited); how many."""
    due = conn.execute(
        select(folder_studies.c.id, folders.c.name, folders.c.kind, studies.c.study_uid, patients.c.patient_id)
        .join(folders, folders.c.id == folder_studies.c.folder_id)
        .join(studies, studies.c.id == folder_studies.c.study_id)
        .join(patients, patients.c.id == studies.c.patient_pk)
        .where(folder_studies.c.expires_at <= now)
        .limit(500)
    ).all()
    for row in due:
        conn.execute(delete(folder_studies).where(folder_studies.c.id == row.id))
        audit.record(
            conn,
            "folder.expire",
            username="retention",
            study_uid=row.study_uid,
            patient_id=row.patient_id,
            object_type="folder",
            object_id=row.name,
            detail=f"left {row.kind} folder {row.name}: its time there was up",
        )
    return len(due)
