"""A user changing their own password (in the portal, or at the forced change after sign-in): the current
password proves it is them; the new one must meet the policy; every other session and token of theirs
ends, so a stolen session does not outlive the change. Both outcomes are audited."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts
from imex.auth.passwords import verify_password
from imex.auth.permissions import AuditActor
from imex.db.models import User, WebSession
from imex.errors import Forbidden


class WrongPassword(Forbidden):
    """The current password given is not the user's. Its failure audit event is recorded before this is
    raised: the caller commits it (the attempt must stay in the trail)."""


def change_password(
    s: Session,
    user: User,
    current_password: str,
    new_password: str,
    policy: accounts.LoginPolicy,
    *,
    ip: str,
    keep_session: int | None,
) -> None:
    """Set the user's new password and end their other sessions (all but `keep_session`).
    WrongPassword when the current password is wrong; AccountError (Invalid) when the policy refuses it."""
    who: AuditActor = {"user_id": user.id, "username": user.username, "institution_id": user.institution_id, "ip": ip}
    if not verify_password(user.password_hash, current_password):
        audit.record(s, "user.password", outcome="failure", detail="current password wrong", **who)
        raise WrongPassword("The current password is wrong.")
    accounts.set_password(s, user, new_password, policy)
    s.execute(
        update(WebSession)
        .where(WebSession.user_id == user.id, WebSession.id != (keep_session or -1))
        .values(revoked=True)
    )
    audit.record(s, "user.password", object_type="user", object_id=user.username, **who)
