"""Image requests: a user at one institution asks another for a patient's images.

States: open -> accepted -> fulfilled; open or accepted -> declined (with a reason), cancelled (by the
requester) or expired (by the request job). Every change is a RequestEvent and an audit event, written in
the caller's transaction. The source fulfils a request by pushing the study to the hub (match_arrival,
called by the router's exchange hook, turns the arrival into a transaction to the requester) or by
granting it from the portal (the hub C-FINDs the source's PACS with the request's data and C-MOVEs the
studies the user confirms). A request is fulfilled when its transaction's studies are delivered to the
requesting institution (request_jobs.py), not merely routed, so "fulfilled" means the images are there.

Functions take an open Core connection in a transaction; the portal passes `session.connection()`.
E-mails name the request and the institutions, never the patient.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, select, update

from imex import audit
from imex.db import utcnow
from imex.db.models import (
    image_requests,
    instances,
    institutions,
    nodes,
    notifications,
    patients,
    request_events,
    series,
    transaction_studies,
    users,
)
from imex.errors import Conflict, Invalid
from imex.harmonise import nhs
from imex.notify.email import queue_email
from imex.requests.matching import Arrival, Wanted, match_reason, normalise_name, valid_date
from imex.routing import priority as priorities

log = logging.getLogger("imex.requests.lifecycle")
ACTIVE = ("open", "accepted")
SYSTEM = "imex"
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")


class RequestError(Invalid, ValueError):
    """The request cannot be made or changed as asked; the message says what to fix (HTTP 422)."""


class WrongState(RequestError, Conflict):
    """The request is not in a state that allows this (HTTP 409)."""


@dataclass(frozen=True)
class Actor:
    """Who changes a request: a portal user, or the hub itself (user_id None)."""

    user_id: int | None
    username: str
    institution_id: int | None
    ip: str = ""

    def audit_fields(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "institution_id": self.institution_id,
            "ip": self.ip,
        }


HUB = Actor(None, SYSTEM, None)


@dataclass(frozen=True)
class RequestForm:
    """What the requester fills in. The patient: an NHS number, and/or name and date of birth."""

    source_ods: str
    nhs_number: str = ""
    patient_name: str = ""
    birth_date: str = ""
    accession: str = ""
    modality: str = ""
    date_from: str = ""
    date_to: str = ""
    reason: str = ""
    urgency: str = "routine"
    recipient: str = ""
    recipient_user_id: int | None = None

    def problems(self) -> list[str]:
        """Everything wrong with the form, in words the requester can act on."""
        found: list[str] = []
        if self.nhs_number.strip():
            why = nhs.problem(self.nhs_number)
            if why:
                found.append(f"the NHS number is not valid: {why}")
        elif not (self.patient_name.strip() and self.birth_date.strip()):
            found.append("give the patient's NHS number, or their name and date of birth")
        if self.birth_date and not valid_date(self.birth_date):
            found.append("the date of birth must be a date written YYYYMMDD")
        for label, value in (("from", self.date_from), ("to", self.date_to)):
            if value and not valid_date(value):
                found.append(f"the 'date {label}' must be a date written YYYYMMDD")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            found.append("the date range ends before it starts")
        if self.modality and not _MODALITY.match(self.modality.strip().upper()):
            found.append("the modality is a DICOM code such as CT, MR or CR")
        if not self.reason.strip():
            found.append("say why the images are needed (the reason)")
        try:
            priorities.parse(self.urgency)
        except ValueError as exc:
            found.append(str(exc))
        return found


# -- who may be asked ----------------------------------------------------------------------------------


def exchange_partners(conn: Connection, requesting_institution_id: int) -> list[Any]:
    """Institutions a user may ask: every other institution that takes part in exchange (has an enabled
    DICOM node, so it can send), by name."""
    has_node = exists().where(nodes.c.institution_id == institutions.c.id, nodes.c.enabled.is_(True))
    return list(
        conn.execute(
            select(institutions.c.id, institutions.c.ods_code, institutions.c.name)
            .where(institutions.c.id != requesting_institution_id, has_node)
            .order_by(institutions.c.name)
        ).all()
    )


def source_for(conn: Connection, requesting_institution_id: int, ods: str) -> Any:
    """The institution with this ODS code, when it may be asked; RequestError says why not."""
    code = (ods or "").strip().upper()
    inst = conn.execute(
        select(institutions.c.id, institutions.c.ods_code, institutions.c.name).where(
            institutions.c.ods_code == code[:16]
        )
    ).first()
    if inst is None:
        raise RequestError(f"no institution has the ODS code {code[:16]!r}")
    if inst.id == requesting_institution_id:
        raise RequestError("a request goes to another institution: your own institution's images are in your own PACS")
    if inst.id not in {p.id for p in exchange_partners(conn, requesting_institution_id)}:
        raise RequestError(
            f"{inst.name} ({inst.ods_code}) does not take part in image exchange (it has no "
            "enabled DICOM node), so it cannot be asked"
        )
    return inst


# -- history, audit and alerts -------------------------------------------------------------------------


def add_event(conn: Connection, request_id: int, actor: Actor, event: str, detail: str = "") -> None:
    """One line of the request's history and the matching audit event."""
    now = utcnow()
    conn.execute(
        insert(request_events).values(
            request_id=request_id, at=now, actor=actor.username[:200], event=event[:32], detail=detail[:2000]
        )
    )
    conn.execute(update(image_requests).where(image_requests.c.id == request_id).values(updated_at=now))
    audit.record(
        conn,
        f"request.{event}",
        object_type="image_request",
        object_id=request_id,
        detail=detail[:500],
        **actor.audit_fields(),
    )


def _users_with(conn: Connection, institution_id: int, permission: str) -> list[Any]:
    from imex.notify.inbox import users_with_permission

    return users_with_permission(conn, institution_id, permission)


def _tell(conn: Connection, user_rows: list[Any], kind: str, title: str, request_id: int, body: str) -> None:
    """In-app notification and e-mail to each user (request alerts ask for action: every user with an
    address gets them). No patient identifiers: the request is named by its number and institutions."""
    link = f"/requests/{request_id}"
    seen: set[int] = set()
    for u in user_rows:
        if u.id in seen:
            continue
        seen.add(u.id)
        conn.execute(insert(notifications).values(user_id=u.id, at=utcnow(), kind=kind, title=title[:200], link=link))
    queue_email(
        conn,
        [u.email for u in user_rows if u.email],
        f"[imex] {title}",
        f"{body}\n\nSign in to the imex portal to see request {request_id} ({link}).\n",
    )


def _names(conn: Connection, row: Any) -> tuple[str, str]:
    """'Name (ODS)' of the requesting and the source institutions."""

    def one(iid: int) -> str:
        r = conn.execute(select(institutions.c.name, institutions.c.ods_code).where(institutions.c.id == iid)).one()
        return f"{r.name} ({r.ods_code})"

    return one(row.requesting_institution_id), one(row.source_institution_id)


def _requesters(conn: Connection, row: Any) -> list[Any]:
    ids = [i for i in (row.requester_user_id, row.recipient_user_id) if i is not None]
    return (
        list(
            conn.execute(
                select(users.c.id, users.c.email).where(users.c.id.in_(ids), users.c.disabled.is_(False))
            ).all()
        )
        if ids
        else []
    )


def _what(row: Any) -> str:
    bits = [priorities.name(row.priority)]
    if row.modality:
        bits.append(row.modality)
    return ", ".join(bits)


# -- the life of a request -----------------------------------------------------------------------------


def get(conn: Connection, request_id: int) -> Any:
    return conn.execute(select(image_requests).where(image_requests.c.id == request_id)).first()


def create(conn: Connection, actor: Actor, form: RequestForm, *, expiry_days: float) -> int:
    """Record the request, its first event, and alert the source institution's fulfillers."""
    problems = form.problems()
    if problems:
        raise RequestError("; ".join(problems))
    assert actor.institution_id is not None
    source = source_for(conn, actor.institution_id, form.source_ods)
    if form.recipient_user_id is not None:
        ok = conn.execute(
            select(users.c.id).where(
                users.c.id == form.recipient_user_id,
                users.c.institution_id == actor.institution_id,
                users.c.disabled.is_(False),
            )
        ).first()
        if ok is None:
            raise RequestError("the named recipient must be an active user of your own institution")
    now = utcnow()
    request_id = int(
        conn.execute(
            insert(image_requests)
            .values(
                requester_user_id=actor.user_id,
                requester_name=actor.username[:200],
                requesting_institution_id=actor.institution_id,
                source_institution_id=source.id,
                nhs_number=nhs.normalise(form.nhs_number)[:16],
                patient_name=form.patient_name.strip()[:200],
                birth_date=form.birth_date.strip(),
                patient_id="",
                accession=form.accession.strip()[:64],
                study_uid="",
                modality=form.modality.strip().upper(),
                date_from=form.date_from,
                date_to=form.date_to,
                reason=form.reason.strip()[:4000],
                priority=priorities.parse(form.urgency),
                recipient=form.recipient.strip()[:200] or None,
                recipient_user_id=form.recipient_user_id,
                destination_node_id=None,
                state="open",
                created_at=now,
                updated_at=now,
                expires_at=now + dt.timedelta(days=expiry_days),
            )
            .returning(image_requests.c.id)
        ).scalar_one()
    )
    row = get(conn, request_id)
    requester, source_name = _names(conn, row)
    add_event(conn, request_id, actor, "created", f"asked {source_name}: {_what(row)}")
    _tell(
        conn,
        _users_with(conn, source.id, "requests.fulfil"),
        "request.new",
        f"Image request {request_id} from {requester} ({_what(row)})",
        request_id,
        f"{requester} asks {source_name} for a patient's images ({_what(row)}).",
    )
    return request_id


def _change(conn: Connection, request_id: int, allowed: tuple[str, ...], state: str, **values: Any) -> Any:
    """Move the request to `state` if it is in one of `allowed` (checked in the UPDATE itself, so two users
    acting at once cannot both win); returns the row as it was."""
    row = get(conn, request_id)
    if row is None:
        raise RequestError(f"no request {request_id}")
    done = conn.execute(
        update(image_requests)
        .where(image_requests.c.id == request_id, image_requests.c.state.in_(allowed))
        .values(state=state, updated_at=utcnow(), **values)
    ).rowcount
    if not done:
        raise WrongState(f"request {request_id} is {row.state}; it cannot become {state}")
    return row


def accept(conn: Connection, request_id: int, actor: Actor) -> None:
    row = _change(conn, request_id, ("open",), "accepted")
    requester, source_name = _names(conn, row)
    add_event(conn, request_id, actor, "accepted", f"accepted by {actor.username} of {source_name}")
    _tell(
        conn,
        _requesters(conn, row),
        "request.accepted",
        f"Image request {request_id} accepted by {source_name}",
        request_id,
        f"{source_name} accepted your image request {request_id}; the images follow.",
    )


def decline(conn: Connection, request_id: int, actor: Actor, reason: str) -> None:
    if not (reason or "").strip():
        raise RequestError("say why the request is declined (the reason is required)")
    row = _change(conn, request_id, ACTIVE, "declined", decline_reason=reason.strip()[:4000])
    requester, source_name = _names(conn, row)
    add_event(conn, request_id, actor, "declined", reason.strip())
    _tell(
        conn,
        _requesters(conn, row),
        "request.declined",
        f"Image request {request_id} declined by {source_name}",
        request_id,
        f"{source_name} declined your image request {request_id}. Their reason is shown on the request's page.",
    )


def cancel(conn: Connection, request_id: int, actor: Actor) -> None:
    row = _change(conn, request_id, ACTIVE, "cancelled")
    requester, source_name = _names(conn, row)
    add_event(conn, request_id, actor, "cancelled", f"cancelled by {actor.username}")
    _tell(
        conn,
        _users_with(conn, row.source_institution_id, "requests.fulfil"),
        "request.cancelled",
        f"Image request {request_id} from {requester} was cancelled",
        request_id,
        f"{requester} cancelled image request {request_id}; nothing more needs doing.",
    )


def query_for(row: Any) -> dict[str, str]:
    """The search of the source's PACS pre-filled from the request: the NHS number as Patient ID when
    there is one, else name and date of birth; with the accession, modality and dates asked for."""
    q = {
        "patient_id": row.nhs_number or row.patient_id or "",
        "patient_name": "",
        "birth_date": "",
        "accession": row.accession or "",
        "study_uid": row.study_uid or "",
        "modality": row.modality or "",
        "date_from": row.date_from or "",
        "date_to": row.date_to or "",
    }
    if not q["patient_id"]:
        q["patient_name"] = normalise_name(row.patient_name)
        q["birth_date"] = row.birth_date or ""
    return q


def retrieve_node(conn: Connection, institution_id: int) -> Any:
    """The source's PACS the hub may C-FIND and C-MOVE (its first enabled query/retrieve node)."""
    node = conn.execute(
        select(nodes.c.id, nodes.c.name, nodes.c.ae_title, nodes.c.host, nodes.c.port)
        .where(nodes.c.institution_id == institution_id, nodes.c.query_retrieve.is_(True), nodes.c.enabled.is_(True))
        .order_by(nodes.c.id)
    ).first()
    if node is None:
        raise RequestError(
            "your institution has no PACS node the hub may query and retrieve from; an "
            "administrator turns on query/retrieve for it (or push the study to the hub)"
        )
    return node


def grant(conn: Connection, request_id: int, actor: Actor, study_uids: list[str]) -> int:
    """The source sends the chosen studies from its PACS: a transaction to the requester (with the
    request's priority and recipient) and one retrieval (C-MOVE to the hub) per study."""
    from imex.exchanges import retrievals
    from imex.exchanges.transactions import TransactionError, open_transaction

    uids = list(dict.fromkeys(u.strip() for u in study_uids if u and u.strip()))
    if not uids:
        raise RequestError("choose at least one study to send")
    bad = [u for u in uids if len(u) > 64 or not re.fullmatch(r"[0-9.]+", u)]
    if bad:
        raise RequestError(f"not a study instance UID: {bad[0][:70]!r}")
    row = get(conn, request_id)
    if row is None:
        raise RequestError(f"no request {request_id}")
    if row.state not in ACTIVE:
        raise WrongState(f"request {request_id} is {row.state}; it cannot be fulfilled")
    node = retrieve_node(conn, row.source_institution_id)
    try:
        tid = open_transaction(
            conn,
            kind="request",
            source_institution_id=row.source_institution_id,
            destination_institution_id=row.requesting_institution_id,
            sender_user_id=actor.user_id,
            sender_name=actor.username,
            study_uids=uids,
            subject=f"Image request {request_id}",
            priority=row.priority,
            recipient=row.recipient,
            recipient_user_id=row.recipient_user_id,
            destination_node_id=row.destination_node_id,
        )
        for uid in uids:
            retrievals.enqueue(
                conn,
                node_id=node.id,
                study_uid=uid,
                purpose="transfer",
                transaction_id=tid,
                request_id=request_id,
                institution_id=row.source_institution_id,
                requested_by=actor.username,
            )
    except (TransactionError, retrievals.RetrievalError) as exc:
        raise RequestError(str(exc)) from None
    values: dict[str, Any] = {"updated_at": utcnow()}
    if row.transaction_id is None:
        values["transaction_id"] = tid
    if row.state == "open":
        values["state"] = "accepted"
    conn.execute(update(image_requests).where(image_requests.c.id == request_id).values(**values))
    if row.state == "open":
        _, source_name = _names(conn, row)
        add_event(conn, request_id, actor, "accepted", f"accepted by {actor.username} of {source_name}")
    add_event(
        conn,
        request_id,
        actor,
        "granted",
        f"{len(uids)} stud{'y' if len(uids) == 1 else 'ies'} retrieved from {node.name} ({node.ae_title}), "
        f"exchange {tid}",
    )
    return tid


# -- arrivals ------------------------------------------------------------------------------------------

# The blob store of each hub's database, so that matching can read Other Patient IDs from a stored header
# (the index keeps only the Patient ID). Keyed by engine: several hubs may run in one process.
_STORES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def register_store(engine: Any, store: Any) -> None:
    """Called by the hub at start: where the instances of this database's studies are stored."""
    _STORES[engine] = store


def _nhs_in_header(conn: Connection, study_id: int) -> tuple[str, ...]:
    """The NHS number in the first stored instance's header (Patient ID with an NHS issuer or none, or an
    Other Patient IDs item whose issuer is NHS), when it is valid."""
    store = _STORES.get(conn.engine)
    if store is None:
        return ()
    key = conn.execute(
        select(instances.c.blob_key).where(instances.c.study_id == study_id).order_by(instances.c.id).limit(1)
    ).scalar()
    if not key:
        return ()
    try:
        from pydicom import dcmread

        ds = dcmread(store.path(key), stop_before_pixels=True, force=True)
        found = nhs.discover(ds)
    except Exception as exc:  # an unreadable header must not stop routing: match on the index alone
        log.warning("cannot read the header of study %s for request matching: %s", study_id, exc)
        return ()
    return (found.number,) if found is not None and found.problem is None else ()


def arrival_of(conn: Connection, study: Any) -> Arrival:
    """What the hub knows of a study, for matching."""
    patient = conn.execute(
        select(patients.c.patient_id, patients.c.issuer, patients.c.name, patients.c.birth_date).where(
            patients.c.id == study.patient_pk
        )
    ).first()
    modalities = set((study.modalities or "").replace("\\", " ").split())
    modalities |= {
        m
        for m in conn.execute(select(series.c.modality).distinct().where(series.c.study_id == study.id)).scalars()
        if m
    }
    return Arrival(
        study_uid=study.study_uid,
        patient_id=patient.patient_id if patient else "",
        other_patient_ids=_nhs_in_header(conn, study.id),
        issuer=patient.issuer if patient else "",
        patient_name=patient.name if patient else "",
        birth_date=patient.birth_date if patient else "",
        accession=study.accession_number or "",
        modalities=tuple(sorted(modalities)),
        study_date=study.study_date or "",
    )


def wanted_of(row: Any) -> Wanted:
    return Wanted(
        nhs_number=row.nhs_number,
        patient_name=row.patient_name,
        birth_date=row.birth_date,
        accession=row.accession,
        study_uid=row.study_uid,
        modality=row.modality,
        date_from=row.date_from,
        date_to=row.date_to,
    )


def match_arrival(conn: Connection, study_row: Any, source_institution_ids: set[int]) -> int | None:
    """Called by the router's exchange hook for a stable study that belongs to no transaction: when it is
    what an open or accepted request asked of the institution that sent it, open a transaction to the
    requester (the request's priority and recipient) and return its id; otherwise None.
    The most urgent, then oldest, matching request wins; a study fulfils one request."""
    if not source_institution_ids:
        return None
    already = conn.execute(
        select(transaction_studies.c.transaction_id).where(transaction_studies.c.study_uid == study_row.study_uid)
    ).first()
    if already is not None:
        return None  # already on its way in a transaction (e.g. retrieved for a grant): the hook routes it
    candidates = conn.execute(
        select(image_requests)
        .where(
            image_requests.c.state.in_(ACTIVE),
            image_requests.c.expires_at > utcnow(),
            image_requests.c.source_institution_id.in_(sorted(source_institution_ids)),
            image_requests.c.source_institution_id == study_row.institution_id,
        )
        .order_by(image_requests.c.priority.desc(), image_requests.c.created_at, image_requests.c.id)
    ).all()
    if not candidates:
        return None
    arrival = arrival_of(conn, study_row)
    for row in candidates:
        reason = match_reason(wanted_of(row), arrival)
        if reason is None:
            continue
        from imex.exchanges.transactions import TransactionError, open_transaction

        try:
            tid = open_transaction(
                conn,
                kind="request",
                source_institution_id=row.source_institution_id,
                destination_institution_id=row.requesting_institution_id,
                sender_user_id=None,
                sender_name=SYSTEM,
                study_uids=[study_row.study_uid],
                subject=f"Image request {row.id}",
                priority=row.priority,
                recipient=row.recipient,
                recipient_user_id=row.recipient_user_id,
                destination_node_id=row.destination_node_id,
            )
        except TransactionError as exc:
            log.warning("study %s matches request %s but cannot be sent: %s", study_row.study_uid, row.id, exc)
            add_event(conn, row.id, HUB, "unsent", f"a matching study arrived but cannot be sent: {exc}")
            return None
        values: dict[str, Any] = {}
        if row.transaction_id is None:
            values["transaction_id"] = tid
        if row.state == "open":
            values["state"] = "accepted"
        if values:
            conn.execute(update(image_requests).where(image_requests.c.id == row.id).values(**values))
        add_event(
            conn,
            row.id,
            HUB,
            "matched",
            f"a study pushed by the source matched by {reason}; sent to the requester as exchange {tid}",
        )
        log.info("study %s matches image request %s by %s: exchange %s", study_row.study_uid, row.id, reason, tid)
        return tid
    return None


# -- the request job: fulfilment and expiry --------------------------------------------------------------


def mark_fulfilled(conn: Connection) -> list[int]:
    """Active requests whose transaction's studies are all delivered to the requester become fulfilled;
    the requester and the named recipient are told."""
    from imex.db.models import transactions
    from imex.exchanges.transactions import overall_state, study_progress

    done: list[int] = []
    for row in conn.execute(
        select(image_requests).where(image_requests.c.state.in_(ACTIVE), image_requests.c.transaction_id.is_not(None))
    ).all():
        tx = conn.execute(select(transactions).where(transactions.c.id == row.transaction_id)).first()
        if tx is None or overall_state(study_progress(conn, tx)) != "delivered":
            continue
        changed = conn.execute(
            update(image_requests)
            .where(image_requests.c.id == row.id, image_requests.c.state.in_(ACTIVE))
            .values(state="fulfilled", fulfilled_at=utcnow(), updated_at=utcnow())
        ).rowcount
        if not changed:
            continue
        requester, source_name = _names(conn, row)
        add_event(conn, row.id, HUB, "fulfilled", f"the images of exchange {tx.id} were delivered to {requester}")
        _tell(
            conn,
            _requesters(conn, row),
            "request.fulfilled",
            f"Image request {row.id} fulfilled: images from {source_name} delivered",
            row.id,
            f"The images you asked {source_name} for (request {row.id}, {_what(row)}) have been delivered to "
            f"{requester}.",
        )
        _tell(
            conn,
            _users_with(conn, row.source_institution_id, "requests.fulfil"),
            "request.fulfilled",
            f"Image request {row.id} fulfilled: delivered to {requester}",
            row.id,
            f"The images for request {row.id} from {requester} were delivered.",
        )
        done.append(row.id)
    return done


def expire_due(conn: Connection, now: dt.datetime | None = None) -> list[int]:
    """Open or accepted requests past their expiry with nothing on its way become expired."""
    now = now or utcnow()
    expired: list[int] = []
    for row in conn.execute(
        select(image_requests).where(
            image_requests.c.state.in_(ACTIVE),
            image_requests.c.expires_at <= now,
            image_requests.c.transaction_id.is_(None),
        )
    ).all():
        changed = conn.execute(
            update(image_requests)
            .where(
                image_requests.c.id == row.id,
                image_requests.c.state.in_(ACTIVE),
                image_requests.c.transaction_id.is_(None),
            )
            .values(state="expired", updated_at=now)
        ).rowcount
        if not changed:
            continue
        requester, source_name = _names(conn, row)
        add_event(conn, row.id, HUB, "expired", f"not fulfilled by {now:%Y-%m-%d %H:%M} UTC")
        _tell(
            conn,
            _requesters(conn, row),
            "request.expired",
            f"Image request {row.id} to {source_name} expired",
            row.id,
            f"Your image request {row.id} to {source_name} expired unfulfilled; ask again if the "
            "images are still needed.",
        )
        expired.append(row.id)
    return expired


def needs_action_clause(institution_id: int):
    """Requests an institution's fulfillers must act on: asked of it and still open."""
    return and_(image_requests.c.source_institution_id == institution_id, image_requests.c.state == "open")
