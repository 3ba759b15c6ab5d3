"""A transaction's message thread: both institutions' permitted users read it; a post tells the other
side's followers (in-app and by e-mail, without patient identifiers). Followers are the other side's
people in the transaction: its sender or named recipient user and whoever wrote in the thread; when
there are none yet, the other institution's users who see transfers."""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from imex.db import utcnow
from imex.db.models import institutions, transaction_messages, transactions, users
from imex.errors import Invalid
from imex.notify.email import queue_email
from imex.notify.inbox import notify_users, users_with_permission

MESSAGE_KIND = "exchange.message"
MAX_BODY = 10000


class MessageRefused(Invalid, ValueError):
    """A message that cannot be posted (empty or too long); the message says which."""


def followers(conn: Connection, tx, institution_id: int) -> list:
    """Enabled users of `institution_id` who take part in the transaction (see module docstring)."""
    ids = {u for u in (tx.sender_user_id, tx.recipient_user_id) if u is not None}
    ids |= set(
        conn.execute(
            select(transaction_messages.c.author_user_id).where(
                transaction_messages.c.transaction_id == tx.id, transaction_messages.c.author_user_id.is_not(None)
            )
        ).scalars()
    )
    rows = conn.execute(
        select(users.c.id, users.c.email, users.c.email_events).where(
            users.c.id.in_(ids or {-1}), users.c.institution_id == institution_id, users.c.disabled.is_(False)
        )
    ).all()
    return list(rows) or users_with_permission(conn, institution_id, "transfers.view")


def post(
    conn: Connection,
    transaction_id: int,
    *,
    author_user_id: int | None,
    author_name: str,
    institution_id: int,
    body: str,
) -> int:
    """Add a message and tell the other side's followers; returns the message id."""
    text = (body or "").strip()
    if not text:
        raise MessageRefused("write a message first")
    if len(text) > MAX_BODY:
        raise MessageRefused(f"a message is at most {MAX_BODY} characters")
    tx = conn.execute(select(transactions).where(transactions.c.id == transaction_id)).one()
    mid = conn.execute(
        insert(transaction_messages)
        .values(
            transaction_id=transaction_id,
            author_user_id=author_user_id,
            author_name=author_name[:200],
            institution_id=institution_id,
            body=text,
            at=utcnow(),
        )
        .returning(transaction_messages.c.id)
    ).scalar_one()
    other = tx.destination_institution_id if institution_id == tx.source_institution_id else tx.source_institution_id
    tell(conn, tx, other, institution_id, "New message on exchange")
    return int(mid)


def tell(conn: Connection, tx, to_institution_id: int, from_institution_id: int, what: str) -> int:
    """Notify the followers at `to_institution_id` and e-mail them; no patient identifiers."""
    sender = conn.execute(
        select(institutions.c.name, institutions.c.ods_code).where(institutions.c.id == from_institution_id)
    ).first()
    who = f"{sender.name} ({sender.ods_code})" if sender else "another institution"
    people = followers(conn, tx, to_institution_id)
    link = f"/exchanges/{tx.id}"
    title = f"{what} {tx.id} from {who}"
    notify_users(conn, people, MESSAGE_KIND, title, link)
    queue_email(
        conn,
        [p.email for p in people if p.email],
        f"[imex] {title}",
        f"{title}.\n\nSign in to the imex portal to read it ({link}).\n",
    )
    return len(people)
