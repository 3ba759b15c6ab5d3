"""The audit trail as CSV, streamed row by row so a year's trail never sits in memory."""
from __future__ import annotations

import csv
import io
from typing import Iterable, Iterator

COLUMNS = ("id", "at", "action", "outcome", "username", "institution_id", "ip", "study_uid", "patient_id",
           "object_type", "object_id", "detail")


def _safe(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def iter_csv(rows: Iterable) -> Iterator[str]:  # type: ignore[type-arg]
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield flush()
    for row in rows:
        values = [row.at.isoformat(timespec="seconds") + "Z" if name == "at" else getattr(row, name)
                  for name in COLUMNS]
        writer.writerow([_safe(v) for v in values])
        yield flush()
