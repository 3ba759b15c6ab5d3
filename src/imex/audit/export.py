"""The audit trail as CSV, streamed row by row so a year's trail never sits in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

COLUMNS = (
    "id",
    "at",
    "action",
    "outcome",
    "username",
    "institution",  # ODS code
    "ip",
    "study_uid",
    "patient_id",
    "patient_name",
    "object_type",
    "object_id",
    "detail",
)


def _safe(value: object) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(columns: Iterable[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """A header line, then one line per row, each cell safe to open in a spreadsheet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(list(columns))
    yield flush()
    for row in rows:
        writer.writerow([_safe(v) for v in row])
        yield flush()


def iter_csv(rows: Iterable) -> Iterator[str]:
    """Audit events as CSV."""
    return csv_lines(
        COLUMNS,
        (
            [row.at.isoformat(timespec="seconds") + "Z" if name == "at" else getattr(row, name) for name in COLUMNS]
            for row in rows
        ),
    )
