"""Storing an arriving instance: its bytes into the blob store, then one transaction that indexes it
(patient, study, series, instance) and tells the router the study changed.

The blob is renamed into place before the transaction commits and the sender is answered only after
the commit, so an acknowledged instance is always both stored and indexed. A crash in between leaves at
most an unreferenced blob, never an index row without its file.

An instance arriving over DICOM is never held whole in memory: `Ingest.receive` gives a `Receiving`
that hashes its bytes and writes them to a temporary file in the store as they come, and
`store_received` moves that file into place, so the file is never read back.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, DateTime, Table, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from imex import events
from imex.db import Database, utcnow
from imex.db.models import instances, items, patients, series, studies
from imex.dicom.parse import IndexFields
from imex.index import ownership
from imex.store import BlobStore


@dataclass(frozen=True)
class Source:
    """Who sent an instance and how: the calling node, and the called AE title (a possible alias)."""

    institution_id: int
    node_id: int | None
    calling_aet: str
    called_aet: str


@dataclass(frozen=True)
class Stored:
    study_id: int
    instance_id: int
    blob_key: str
    size: int
    # new | replaced (same UID, other bytes) | duplicate (same UID, same bytes)
    outcome: str


# The statements every instance runs, written once as text: building SQLAlchemy expressions and their
# cache keys per instance cost more than executing them. The syntax is the same on SQLite and PostgreSQL.
_INSERT_INSTANCE = text(
    "INSERT INTO instances (study_id, series_id, sop_uid, sop_class_uid, transfer_syntax_uid, number, blob_key, "
    "size, source_node_id, calling_aet, called_aet, received_at) VALUES (:study_id, :series_id, :sop_uid, "
    ":sop_class_uid, :transfer_syntax_uid, :number, :blob_key, :size, :source_node_id, :calling_aet, "
    ":called_aet, :received_at) ON CONFLICT DO NOTHING RETURNING id"
).bindparams(bindparam("received_at", type_=DateTime))
_COUNT_SERIES = text("UPDATE series SET num_instances = num_instances + 1 WHERE id = :id")
_COUNT_STUDY = text(
    "UPDATE studies SET num_instances = num_instances + 1, received_seq = received_seq + 1, "
    "last_received_at = :now, route_state = 'receiving' WHERE id = :id"
).bindparams(bindparam("now", type_=DateTime))


class Receiving:
    """A blob being received: its bytes are hashed and written to a temporary file in the store's tmp
    folder as they arrive (gathered into writes of about 256 KiB, without copying them), and the file is
    renamed to its content address once whole."""

    _FLUSH, _MAX_PARTS = 256 << 10, 64  # bytes, and pieces (each may hold on to a whole PDU), per write

    def __init__(self, store: BlobStore, header: bytes) -> None:
        self.store = store
        self.digest = hashlib.sha256()
        self.size = 0
        self.parts: list[bytes | memoryview] = []
        self.buffered = 0
        self.tmp = os.path.join(store.tmp, f"in-{secrets.token_hex(12)}")  # swept by clean_temporary
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.write(header)

    def write(self, chunk: bytes | memoryview) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        self.parts.append(chunk)
        self.buffered += len(chunk)
        if self.buffered >= self._FLUSH or len(self.parts) >= self._MAX_PARTS:
            self._flush()

    def _flush(self) -> None:
        assert self.fd is not None
        parts, self.parts, self.buffered = self.parts, [], 0
        while parts:
            written = os.writev(self.fd, parts)
            while parts and written >= len(parts[0]):  # a short write (rare): go on from where it stopped
                written -= len(parts[0])
                parts.pop(0)
            if parts and written:
                parts[0] = memoryview(parts[0])[written:]

    def commit(self) -> tuple[str, int]:
        """Make the file durable and move it to its content address; returns (key, size)."""
        self._flush()
        assert self.fd is not None
        try:
            if self.store.fsync:
                os.fdatasync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = None
        key = self.digest.hexdigest()
        final = self.store.path(key)
        try:
            if final.exists():  # the same bytes are stored already
                os.unlink(self.tmp)
                return key, self.size
            try:
                os.replace(self.tmp, final)
            except FileNotFoundError:  # its folder was removed (e.g. by retention) since the store made it
                os.makedirs(final.parent, exist_ok=True)
                os.replace(self.tmp, final)
            if self.store.fsync:
                folder = os.open(final.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except BaseException:
            self.discard()
            raise
        return key, self.size

    def discard(self) -> None:
        """Leave nothing behind (a refused or abandoned instance); harmless once committed."""
        self.parts = []
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class Ingest:
    def __init__(self, db: Database, store: BlobStore) -> None:
        self.db = db
        self.store = store
        self._dialect_insert = postgresql.insert if db.is_postgres else sqlite.insert
        # ids of patient, study and series rows by their identity, so most instances need no lookup
        self._ids: dict[tuple, int] = {}
        # forwards already announced: (study id, forwarding institution, called AE title)
        self._forwards: set[tuple[int, int, str]] = set()

    def _insert_ignore(self, conn: Connection, table: Table, values: dict) -> bool:
        """Insert unless another transaction already did; True when this one did. (RETURNING, not rowcount:
        on PostgreSQL a one-row insert reports rowcount -1.)"""
        statement = self._dialect_insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id)
        return conn.execute(statement).first() is not None

    def store_instance(
        self, chunks: tuple[bytes, ...], transfer_syntax: str, fields: IndexFields, source: Source
    ) -> Stored:
        """Write the Part 10 bytes (given as chunks) and index them; returns what happened."""
        key, size = self.store.put(chunks)
        return self._indexed(key, size, transfer_syntax, fields, source)

    def receive(self, header: bytes) -> Receiving:
        """Start receiving an instance whose Part 10 file begins with `header` (preamble and meta group)."""
        return Receiving(self.store, header)

    def store_received(self, receiving: Receiving, transfer_syntax: str, fields: IndexFields, source: Source) -> Stored:
        """Move a received instance into the store and index it; returns what happened."""
        key, size = receiving.commit()
        return self._indexed(key, size, transfer_syntax, fields, source)

    def _indexed(self, key: str, size: int, transfer_syntax: str, fields: IndexFields, source: Source) -> Stored:
        try:
            return self._index(key, size, transfer_syntax, fields, source)
        except ownership.NotYourStudy:
            self._discard(key)
            raise
        except IntegrityError:
            # a cached patient/study/series row was deleted meanwhile (retention): look them up again
            self._ids.clear()
            return self._index(key, size, transfer_syntax, fields, source)

    def _index(self, key: str, size: int, transfer_syntax: str, fields: IndexFields, source: Source) -> Stored:
        now = utcnow()
        seen: dict[tuple, int] = {}

        def cached(ident: tuple, lookup) -> tuple[int, bool]:
            """(row id, created): from the ids this process has seen, else from the database."""
            found = self._ids.get(ident)
            if found is not None:
                return found, False
            row_id, created = lookup()
            seen[ident] = row_id
            return row_id, created

        with self.db.engine.begin() as conn:
            # a study of another institution: only sent on by an institution it was delivered to
            if ("st", source.institution_id, fields.study_uid) not in self._ids:
                held = ownership.owner(conn, fields.study_uid)
                if held is not None and held[1] != source.institution_id:
                    return self._forwarded(conn, held[0], key, size, fields, source)
            patient_id, _ = cached(
                ("p", source.institution_id, fields.patient_id, fields.issuer),
                lambda: (self._patient(conn, fields, source), False),
            )
            study_id, _ = cached(
                ("st", source.institution_id, fields.study_uid),
                lambda: self._study(conn, fields, source, patient_id, now),
            )
            series_id, series_new = cached(
                ("se", study_id, fields.series_uid), lambda: self._series_row(conn, fields, study_id)
            )
            values = dict(
                sop_class_uid=fields.sop_class_uid,
                transfer_syntax_uid=transfer_syntax,
                number=fields.instance_number,
                blob_key=key,
                size=size,
                source_node_id=source.node_id,
                calling_aet=source.calling_aet,
                called_aet=source.called_aet,
                received_at=now,
            )
            # the common case, a new instance, in one statement; a UID seen before falls through
            instance_id = conn.execute(
                _INSERT_INSTANCE, dict(study_id=study_id, series_id=series_id, sop_uid=fields.sop_uid, **values)
            ).scalar()
            outcome = "new"
            if instance_id is None:
                row = conn.execute(
                    select(instances.c.id, instances.c.blob_key, instances.c.study_id).where(
                        instances.c.sop_uid == fields.sop_uid
                    )
                ).one()
                if row.study_id != study_id:
                    raise ownership.refuse_instance(fields.sop_uid)
                instance_id = row.id
                if row.blob_key == key:
                    outcome = "duplicate"
                else:
                    conn.execute(
                        update(instances)
                        .where(instances.c.id == row.id)
                        .values(study_id=study_id, series_id=series_id, **values)
                    )
                    # different bytes under the same UID: every destination must get the new version
                    conn.execute(update(items).where(items.c.instance_id == row.id).values(state="pending"))
                    outcome = "replaced"
            if outcome != "duplicate":
                self._count(conn, fields, study_id, series_id, series_new, outcome == "new", now)
        if len(self._ids) > 50_000:
            self._ids.clear()
        self._ids.update(seen)  # only once committed: a rolled-back row must not be remembered
        return Stored(study_id, instance_id, key, size, outcome)

    def _count(
        self, conn: Connection, fields: IndexFields, study_id: int, series_id: int, series_new: bool, new: bool, now
    ) -> None:
        """Update the series and study counters, and tell the router the study changed."""
        if new:
            conn.execute(_COUNT_SERIES, {"id": series_id})
        if new and not series_new and not fields.routing_codes:  # most instances: one prepared statement
            conn.execute(_COUNT_STUDY, {"id": study_id, "now": now})
            return
        study_values: dict = dict(
            received_seq=studies.c.received_seq + 1, last_received_at=now, route_state="receiving"
        )
        if new:
            study_values["num_instances"] = studies.c.num_instances + 1
        if series_new:
            study_values["num_series"] = studies.c.num_series + 1
        if series_new or fields.routing_codes:
            current = conn.execute(
                select(studies.c.modalities, studies.c.routing_codes).where(studies.c.id == study_id)
            ).one()
            study_values.update(_merged("modalities", current.modalities, (fields.modality,)))
            study_values.update(_merged("routing_codes", current.routing_codes, fields.routing_codes))
        conn.execute(update(studies).where(studies.c.id == study_id).values(**study_values))

    def _patient(self, conn: Connection, f: IndexFields, source: Source) -> int:
        where = (
            (patients.c.institution_id == source.institution_id)
            & (patients.c.patient_id == f.patient_id)
            & (patients.c.issuer == f.issuer)
        )
        found = conn.execute(select(patients.c.id).where(where)).scalar()
        if found is not None:
            return found
        self._insert_ignore(
            conn,
            patients,
            dict(
                institution_id=source.institution_id,
                patient_id=f.patient_id,
                issuer=f.issuer,
                name=f.patient_name,
                birth_date=f.birth_date,
                sex=f.sex,
            ),
        )
        return conn.execute(select(patients.c.id).where(where)).scalar_one()

    def _forwarded(
        self, conn: Connection, study_id: int, key: str, size: int, fields: IndexFields, source: Source
    ) -> Stored:
        """An instance of another institution's study, from an institution it was delivered to: the owner's
        copy stands for it (nothing changes), and the forward is announced once per destination asked."""
        held = ownership.check_forward(conn, study_id, fields.study_uid, fields.sop_uid, source.institution_id)
        asked = (study_id, source.institution_id, source.called_aet)
        if asked not in self._forwards:
            events.emit(
                "study.forwarded",
                conn,
                study_id=study_id,
                institution_id=source.institution_id,
                calling_aet=source.calling_aet,
                called_aet=source.called_aet,
            )
            if len(self._forwards) > 10_000:
                self._forwards.clear()
            self._forwards.add(asked)
        return Stored(study_id, held, key, size, "forwarded")

    def _discard(self, key: str) -> None:
        """Delete the blob of a refused instance unless an indexed instance has the same bytes."""
        with self.db.reader() as conn:
            used = conn.execute(select(instances.c.id).where(instances.c.blob_key == key).limit(1)).first()
            conn.rollback()
        if used is None:
            self.store.delete(key)

    def _study(self, conn: Connection, f: IndexFields, source: Source, patient_id: int, now) -> tuple[int, bool]:
        found = conn.execute(
            select(studies.c.id).where(
                studies.c.study_uid == f.study_uid, studies.c.institution_id == source.institution_id
            )
        ).scalar()
        if found is not None:
            return found, False
        created = self._insert_ignore(
            conn,
            studies,
            dict(
                study_uid=f.study_uid,
                patient_pk=patient_id,
                institution_id=source.institution_id,
                accession_number=f.accession_number,
                study_date=f.study_date,
                study_time=f.study_time,
                description=f.study_description,
                modalities="",
                referring_physician=f.referring_physician,
                num_series=0,
                num_instances=0,
                routing_codes="",
                received_seq=0,
                routed_seq=0,
                first_received_at=now,
                last_received_at=now,
                route_state="receiving",
            ),
        )
        row = conn.execute(
            select(studies.c.id, studies.c.institution_id).where(studies.c.study_uid == f.study_uid)
        ).one()
        if row.institution_id != source.institution_id:  # another institution's node was first, just now
            raise ownership.NotYourStudy(f"study {f.study_uid[:64]} is held at the hub for another institution")
        return row.id, created

    def _series_row(self, conn: Connection, f: IndexFields, study_id: int) -> tuple[int, bool]:
        found = conn.execute(select(series.c.id, series.c.study_id).where(series.c.series_uid == f.series_uid)).first()
        created = False
        if found is None:
            created = self._insert_ignore(
                conn,
                series,
                dict(
                    study_id=study_id,
                    series_uid=f.series_uid,
                    modality=f.modality,
                    description=f.series_description,
                    number=f.series_number,
                    body_part=f.body_part,
                    num_instances=0,
                ),
            )
            found = conn.execute(
                select(series.c.id, series.c.study_id).where(series.c.series_uid == f.series_uid)
            ).one()
        if found.study_id != study_id:
            raise ownership.refuse_series(f.series_uid)
        return found.id, created


def _merged(column: str, current: str, new: tuple[str, ...]) -> dict[str, str]:
    """{column: merged value} when `new` adds to the backslash-separated set in `current`, else {}."""
    values = [v for v in current.split("\\") if v]
    added = [v for v in new if v and v not in values]
    return {column: "\\".join(values + added)[:200]} if added else {}
