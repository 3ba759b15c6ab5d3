"""Transfer priorities: emergency, urgent, routine.

Stored as integers on transfers.priority so that the queue's `ORDER BY priority DESC` serves the most
urgent first, across destinations and within one. A transfer's priority only ever rises: a routing rule,
the sender in the portal, or the request it fulfils can raise it, and nothing lowers it by accident.
"""

from __future__ import annotations

ROUTINE = 0
URGENT = 50
EMERGENCY = 100

LEVELS: dict[str, int] = {"routine": ROUTINE, "urgent": URGENT, "emergency": EMERGENCY}


def parse(name: str) -> int:
    """The stored value of a priority name; ValueError names the choices."""
    try:
        return LEVELS[str(name).strip().lower()]
    except KeyError:
        raise ValueError(f"priority {name!r} is none of {', '.join(LEVELS)}") from None


def name(value: int | None) -> str:
    """The name for a stored value (values between levels round down)."""
    value = value or 0
    if value >= EMERGENCY:
        return "emergency"
    if value >= URGENT:
        return "urgent"
    return "routine"
