"""Typed domain errors: what kind of refusal an action met, so that every interface answers it the same way
(the web maps them to HTTP statuses in imex.web.errors, by type, never by reading the message).

A foundation module: it imports nothing of imex, so any layer may raise these. A flow's own error classes
derive from one of them (and from ValueError where older callers catch that). A class that is two kinds
at once counts as the more specific one, in the order of KINDS: e.g. `class FolderExists(FolderError,
Conflict)` under an Invalid FolderError is a Conflict.

Messages are for the person who asked: say what was wrong and what to do about it."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the four kinds below; raise one of them (or a flow's subclass of one), not this."""


class NotFound(DomainError):
    """The object the action is about does not exist, or the caller may not know that it does (both look
    the same from outside). Use for the object named by the URL or command, not for a reference inside the
    submitted input (that is Invalid)."""


class Conflict(DomainError):
    """The input is well formed but clashes with the current state: a name or alias is taken, the object is
    in a state that does not allow this change (already delivered, already extended, not held), or it was
    done already. Trying again later, or after changing the other object, may succeed."""


class Invalid(DomainError):
    """The input itself is wrong and will stay wrong however often it is sent: a malformed or out-of-range
    value, a required field missing, a reference to something that does not exist (an unknown ODS code)."""


class Forbidden(DomainError):
    """The caller is known but may not do this: a missing permission, or acting for the wrong side (the
    requester accepting their own request). Use NotFound instead when the object must stay invisible."""


KINDS: tuple[type[DomainError], ...] = (Forbidden, NotFound, Conflict, Invalid)  # most specific first


def kind_of(exc: DomainError) -> type[DomainError] | None:
    """The kind `exc` counts as (the first of KINDS it is an instance of), or None for a bare DomainError."""
    return next((kind for kind in KINDS if isinstance(exc, kind)), None)
