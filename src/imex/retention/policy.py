"""When a study expires: stamped when it is routed, quarantined or delivered, from the hours of the rule
that routed it, else its institution's, else the setting; never brought forward by a later stamp."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from imex.config import Config
from imex.db.models import institutions, studies


@dataclass(frozen=True)
class RetentionPolicy:
    hours: int = 168
    quarantine_hours: int = 720
    extend_hours: int = 72
    warn_hours: int = 24

    @classmethod
    def from_config(cls, config: Config) -> RetentionPolicy:
        return cls(
            hours=config["retention.hours"],
            quarantine_hours=config["retention.quarantine_hours"],
            extend_hours=config["retention.extend_hours"],
            warn_hours=config["retention.warn_hours"],
        )

    def stamp(self, conn: Connection, study_id: int, base: dt.datetime, *, quarantined: bool = False) -> None:
        """Keep the study at least until `base` plus its hours (0 hours: until someone deletes it)."""
        row = conn.execute(
            select(studies.c.expires_at, studies.c.retention_hours.label("by_rule"), institutions.c.retention_hours)
            .join(institutions, institutions.c.id == studies.c.institution_id)
            .where(studies.c.id == study_id)
        ).first()
        if row is None:
            return
        if quarantined:
            hours = self.quarantine_hours
        elif row.by_rule is not None:  # the routing rule's, then the institution's, then the setting
            hours = row.by_rule
        else:
            hours = row.retention_hours if row.retention_hours is not None else self.hours
        if hours <= 0:
            conn.execute(update(studies).where(studies.c.id == study_id).values(expires_at=None))
            return
        keep_until(conn, study_id, base + dt.timedelta(hours=hours))


def keep_until(conn: Connection, study_id: int, until: dt.datetime) -> None:
    """Keep the study at least until `until` (a later expiry stands)."""
    conn.execute(
        update(studies)
        .where(studies.c.id == study_id, (studies.c.expires_at.is_(None)) | (studies.c.expires_at < until))
        .values(expires_at=until)
    )
