"""A dry run of harmonisation: what would change in a study's header if it were sent to a destination now,
without sending anything or changing anything stored."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import dcmread
from sqlalchemy import select

from imex.db import Database
from imex.db.models import instances, reconciliations, studies, transfers
from imex.harmonise.coerce import Change
from imex.harmonise.prepare import Harmoniser, Resolved
from imex.routing.router import resolve_targets
from imex.store import BlobStore


class PreviewError(ValueError):
    """The study or destination is unknown; the message says which."""


@dataclass
class Preview:
    destination: str
    rules: list[str] = field(default_factory=list)
    hold: str | None = None
    changes: list[Change] = field(default_factory=list)
    instances: int = 0
    sop_instance_uid: str = ""


def preview(db: Database, store: BlobStore, harmoniser: Harmoniser, study_uid: str, target: str) -> list[Preview]:
    """One Preview per destination node of `target` (an ODS code or node name), for the study's first
    instance (UID changes differ per instance; the other changes are the same for all)."""
    with db.reader() as conn:
        study = conn.execute(select(studies.c.id).where(studies.c.study_uid == study_uid)).scalar()
        if study is None:
            raise PreviewError(f"no study {study_uid}")
        node_ids, problem = resolve_targets(conn, target)
        if not node_ids:
            raise PreviewError(problem or f"{target} has no destination node")
        first = conn.execute(
            select(instances.c.blob_key, instances.c.sop_uid)
            .where(instances.c.study_id == study)
            .order_by(instances.c.series_id, instances.c.number, instances.c.id)
        ).first()
        count = conn.execute(select(instances.c.id).where(instances.c.study_id == study)).scalars().all()
        results: list[Preview] = []
        for node_id in node_ids:
            rec = conn.execute(
                select(reconciliations)
                .join(transfers, transfers.c.id == reconciliations.c.transfer_id)
                .where(
                    transfers.c.study_id == study,
                    transfers.c.destination_node_id == node_id,
                    reconciliations.c.state == "resolved",
                )
            ).first()
            resolved = Resolved(rec.patient_id, rec.issuer, rec.accession_number) if rec is not None else None
            prepared = harmoniser.for_study(conn, store, study, node_id, resolved)
            result = Preview(
                prepared.destination,
                instances=len(count),
                hold=prepared.hold,
                sop_instance_uid=first.sop_uid if first else "",
            )
            if prepared.coercion is not None and first is not None:
                result.rules = [r.name for r in prepared.coercion.rules]
                result.changes = prepared.coercion.apply(dcmread(store.path(first.blob_key)))
            results.append(result)
        conn.rollback()
    return results


def render(results: list[Preview]) -> str:
    """The preview as text: per destination, the rules and each attribute's old and new value."""
    lines: list[str] = []
    for r in results:
        lines.append(f"to {r.destination}: {len(r.rules)} rule(s){': ' + ', '.join(r.rules) if r.rules else ''}")
        if r.hold:
            lines.append(f"  would be HELD for reconciliation: {r.hold}")
        if not r.rules:
            lines.append("  no rule applies: the stored instances would be sent byte for byte")
            continue
        if not r.changes:
            lines.append("  no attribute would change")
        width = max((len(c.keyword) for c in r.changes), default=0)
        for c in r.changes:
            lines.append(f"  {c.keyword:<{width}}  {_shown(c.old)}  ->  {_shown(c.new)}")
        lines.append(f"  (shown for instance {r.sop_instance_uid}; {r.instances} instance(s) in the study)")
    return "\n".join(lines)


def _shown(value: str | None) -> str:
    if value is None:
        return "(absent)"
    return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
