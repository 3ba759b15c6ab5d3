"""The database schema: directory (institutions, nodes), the index (patient/study/series/instance) and
the delivery queue (transfers and their items), which is durable so that nothing depends on one
process's memory.

Times are naive UTC (`utcnow()`), the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Naive UTC now: what every timestamp column holds."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Institution(Base):
    """A hospital or trust, known by its ODS code."""

    __tablename__ = "institutions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ods_code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Called AE title that routes a study to this institution's destination nodes; defaults to the ODS code.
    alias: Mapped[str | None] = mapped_column(String(16), unique=True)
    contact_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # every portal user of this institution must sign in with a second factor (TOTP)
    require_second_factor: Mapped[bool] = mapped_column(Boolean, default=False)
    # retention: hours the hub keeps this institution's studies after they were last sent (None: the setting)
    retention_hours: Mapped[int | None] = mapped_column(Integer)
    # most bytes of studies the hub holds for this institution (None: no limit); over it, C-STORE gets 0xA700
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # transfers sent here must name a recipient (person or team); without one they are held
    require_recipient: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Node(Base):
    """A DICOM application entity of an institution: its PACS, a modality, a workstation."""

    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"))
    contact_email: Mapped[str | None] = mapped_column(String(320))
    # Called AE title that routes a study to this node alone.
    alias: Mapped[str | None] = mapped_column(String(16), unique=True)
    # Whether studies routed to the institution are delivered to this node (its PACS), not only sent from it.
    destination: Mapped[bool] = mapped_column(Boolean, default=True)
    max_associations: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # secure transport (0005): the node talks DICOM over TLS only, in both directions, with a certificate
    # whose common name is its node name
    tls: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # exchange (0013): the hub may C-FIND and C-MOVE this node (the institution's PACS) for requests,
    # pre-authorised transfers and the locator; the node must know the hub's AE title as a move destination
    query_retrieve: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # confirmed delivery (0010): none | commitment (Storage Commitment Push Model) | count (C-FIND of what
    # the node holds); see routing/confirm.py
    confirm: Mapped[str] = mapped_column(String(16), default="none", server_default="none")


class Patient(Base):
    """A patient as one institution identifies them: local IDs from two hospitals are different people."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("institution_id", "patient_id", "issuer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(320), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")


class Study(Base):
    """A study in the index, with the counters the router uses to see when it is stable."""

    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(128), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    referring_physician: Mapped[str] = mapped_column(String(320), default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    # Destination codes found in the routing code attribute of its instances, backslash-separated.
    routing_codes: Mapped[str] = mapped_column(String(200), default="")
    # received_seq grows with every stored instance; the router brings routed_seq up to it.
    received_seq: Mapped[int] = mapped_column(Integer, default=0)
    routed_seq: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # receiving | routed | quarantined
    route_state: Mapped[str] = mapped_column(String(16), default="receiving")
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    # retention (0007): when the study may be deleted, stamped when it is routed, quarantined or delivered;
    # a permitted user may extend it once
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    extended_by: Mapped[str | None] = mapped_column(String(64))
    retention_hours: Mapped[int | None] = mapped_column(Integer)  # set by the routing rule that routed it
    __table_args__ = (Index("ix_studies_routing", "route_state", "last_received_at"),
                      Index("ix_studies_expires_at", "expires_at"))


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(128), default="")
    number: Mapped[int | None] = mapped_column(Integer)
    body_part: Mapped[str] = mapped_column(String(64), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)


class Instance(Base):
    """One stored SOP instance: where its bytes are and how it reached the hub."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    number: Mapped[int | None] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    source_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    called_aet: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Transfer(Base):
    """One study going to one destination node: the unit of the durable delivery queue."""

    __tablename__ = "transfers"
    __table_args__ = (
        UniqueConstraint("study_id", "destination_node_id"),
        Index("ix_transfers_queue", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    destination_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="RESTRICT"), index=True)
    # pending | sending | delivered | confirmed | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    instances_total: Mapped[int] = mapped_column(Integer, default=0)
    instances_sent: Mapped[int] = mapped_column(Integer, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # priority transfers (routing/priority.py): who the study is for, and when an overdue emergency alerted
    recipient: Mapped[str | None] = mapped_column(String(200))
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    escalated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # confirmed delivery (0010): when the destination confirmed holding every instance (state `confirmed`),
    # and how many times instances it did not hold were sent again
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    confirm_rounds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TransferItem(Base):
    """One instance of a transfer; `sent` is committed after each confirmed C-STORE, so a restart resends
    only what was not confirmed."""

    __tablename__ = "transfer_items"
    __table_args__ = (
        UniqueConstraint("transfer_id", "instance_id"),
        Index("ix_transfer_items_state", "transfer_id", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    # pending | sent | failed
    state: Mapped[str] = mapped_column(String(8), default="pending")
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class TransferEvent(Base):
    """What happened to a transfer and when, for `imex transfers show` and the operators' history."""

    __tablename__ = "transfer_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")


class Email(Base):
    """Outbox of e-mail alerts: written in the same transaction as the event, sent (and retried) later."""

    __tablename__ = "emails"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(400))
    body: Mapped[str] = mapped_column(Text)
    # pending | sent | failed
    state: Mapped[str] = mapped_column(String(8), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


# -- portal: accounts, roles, sessions, audit, notifications ----------------------------------------


class User(Base):
    """A person who signs in to the portal; belongs to one institution, which scopes what they see."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"), index=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    password_changed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the password must be changed at the next sign-in (set by `imex user reset` and admin resets)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(200))  # encrypted at rest
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # the last TOTP time step accepted, so a code cannot be replayed within its window
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # e-mail preferences: which events reach this user by e-mail (space-separated event kinds)
    email_events: Mapped[str] = mapped_column(String(400), default="transfer.arrived transfer.failed")
    # arrivals to notify about: only those on these worklists (space-separated IDs); empty: all of them
    notify_worklists: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Role(Base):
    """A named set of permissions: built-in (institution_id NULL) or defined by an institution's admins."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("institution_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    permissions: Mapped[str] = mapped_column(Text, default="")  # space-separated permission names
    description: Mapped[str] = mapped_column(String(200), default="")


class RoleGrant(Base):
    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)


class WebSession(Base):
    """A signed-in browser or API token: only a hash of the token is stored, so a database leak does not
    hand out sessions."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # browser | token (bearer token for scripts)
    kind: Mapped[str] = mapped_column(String(8), default="browser")
    name: Mapped[str] = mapped_column(String(100), default="")
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    # a browser session is fully signed in only after the second factor, when the user has one
    second_factor_done: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEvent(Base):
    """Who did what, when, from where, to which patient and study, and how it ended. Append-only: the
    database refuses UPDATE and DELETE on this table (see migration 0002)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_institution_at", "institution_id", "at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")  # success | failure | denied
    user_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the trail outlives the user
    username: Mapped[str] = mapped_column(String(64), default="")
    institution_id: Mapped[int | None] = mapped_column(Integer)
    ip: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class Notification(Base):
    """An in-app notification for one user (the same events may also go out by e-mail)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user", "user_id", "read_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    link: Mapped[str] = mapped_column(String(200), default="")
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Worklist(Base):
    """A virtual node: a named view of an institution's transfers (e.g. one per department), chosen by
    conditions on the study like a routing rule's (modality, source, description pattern)."""

    __tablename__ = "worklists"
    __table_args__ = (UniqueConstraint("institution_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    modalities: Mapped[str] = mapped_column(String(128), default="")  # space-separated; empty: any
    description_pattern: Mapped[str] = mapped_column(String(128), default="")  # * and ? wildcards
    source_ods: Mapped[str] = mapped_column(String(128), default="")  # space-separated; empty: any


# -- HL7 reports: RIS endpoints, reports, their delivery outbox and retrieval queries -------------------


class RisEndpoint(Base):
    """An institution's RIS speaking HL7 v2 over MLLP: it sends reports (identified by MSH-4 and its
    address), receives forwarded ones at host:port, and may answer report queries."""

    __tablename__ = "ris_endpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"), index=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)  # 0: it receives nothing from the hub
    facilities: Mapped[str] = mapped_column(String(400), default="")  # MSH-4 values it sends, space-separated
    peer_host: Mapped[str] = mapped_column(String(255), default="")  # where it connects from; empty: anywhere
    receiving_application: Mapped[str] = mapped_column(String(64), default="")  # MSH-5 of messages to it
    query_template: Mapped[str] = mapped_column(Text, default="")  # empty: it answers no report queries
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Report(Base):
    """One version of a radiology report as a RIS sent it; attached to its study when that is known.
    A later version of the same accession marks the earlier ones superseded."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("institution_id", "control_id"),
                      Index("ix_reports_match", "institution_id", "accession_number"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"))
    ris_endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("ris_endpoints.id", ondelete="SET NULL"))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"), index=True)
    control_id: Mapped[str] = mapped_column(String(64))  # MSH-10 of the message that carried it
    hl7_version: Mapped[str] = mapped_column(String(8), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    identifiers: Mapped[str] = mapped_column(Text, default="")  # every PID-3 value, space-separated
    nhs_number: Mapped[str] = mapped_column(String(16), default="")
    patient_name: Mapped[str] = mapped_column(String(320), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")  # from a ZDS segment, when sent
    procedure: Mapped[str] = mapped_column(String(200), default="")
    # preliminary | final | corrected | addendum
    status: Mapped[str] = mapped_column(String(16))
    clinician: Mapped[str] = mapped_column(String(320), default="")
    observed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    text: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(8), default="push")  # push | query
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))  # of its DICOM form (SR), made on receipt
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    matched_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ReportDelivery(Base):
    """Outbox of report deliveries: one per (report version, destination node, form), written in the same
    transaction as the transfer's delivery or the report's arrival, sent and retried by the hub."""

    __tablename__ = "report_deliveries"
    __table_args__ = (UniqueConstraint("report_id", "destination_node_id", "kind"),
                      Index("ix_report_deliveries_queue", "state", "next_attempt_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    destination_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # hl7 (to the institution's RIS) | dicom (SR to the node)
    # pending | sent | failed | cancelled (a newer version replaced it before it went)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    # what this delivery replaces at the destination: the earlier message's control ID or SR's SOP UID
    supersedes: Mapped[str] = mapped_column(String(64), default="")
    message_id: Mapped[str] = mapped_column(String(64), default="")  # control ID or SOP UID sent
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ReportQuery(Base):
    """Asking the source RIS for the report of a study that has none yet, retried on a schedule."""

    __tablename__ = "report_queries"
    __table_args__ = (Index("ix_report_queries_due", "state", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    # pending | found | given-up
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# -- header harmonisation: transfers held for reconciliation -----------------------------------------

class Reconciliation(Base):
    """A transfer held because its destination requires an NHS number the study lacks (`open`), and the
    patient ID and accession number a user entered to release it (`resolved`); one row per transfer."""

    __tablename__ = "reconciliations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("transfers.id", ondelete="CASCADE"), unique=True)
    # open | resolved
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    patient_id: Mapped[str | None] = mapped_column(String(64))
    issuer: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


# -- retention --------------------------------------------------------------------------------------------


class Tombstone(Base):
    """What the retention job (or an operator) deleted, when and why: the study is gone, this row and the
    audit trail stay."""

    __tablename__ = "tombstones"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    institution_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: it outlives the study
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_received_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    expired_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")


# -- sharing folders --------------------------------------------------------------------------------------


class Folder(Base):
    """A sharing folder: emergency (every authorised user of its participating institutions) or elective
    (named members only), with its own retention. Studies reach it by its called AE title, from the portal,
    or from a transfer."""

    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # emergency | elective
    alias: Mapped[str | None] = mapped_column(String(16), unique=True)  # called AE title that files into it
    retention_hours: Mapped[int] = mapped_column(Integer)
    # elective folders are managed by the admins of the institution that owns them
    owner_institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="SET NULL"))
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class FolderInstitution(Base):
    """An institution taking part in a folder."""

    __tablename__ = "folder_institutions"
    __table_args__ = (UniqueConstraint("folder_id", "institution_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)


class FolderMember(Base):
    """A user of a participating institution who may see an elective folder (added by their own admins)."""

    __tablename__ = "folder_members"
    __table_args__ = (UniqueConstraint("folder_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


class FolderStudy(Base):
    """A study in a folder until `expires_at`; the retention pass takes it out then."""

    __tablename__ = "folder_studies"
    __table_args__ = (UniqueConstraint("folder_id", "study_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    folder_id: Mapped[int] = mapped_column(ForeignKey("folders.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    added_by: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


# Each later feature declares its tables in its own module, on the same Base.
from imex.db import models_commitment, models_exchange, models_links, models_locator, models_uploads  # noqa: E402,F401,E501
