"""Who takes part: institutions (hospitals, by ODS code), their DICOM nodes, their RIS endpoints (HL7 v2
over MLLP) and their worklists (virtual nodes over their transfers)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


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
    # single sign-on (0016): whether its users may sign in with an imex password (off: only through its
    # identity provider or a certificate), and whether a client certificate is required to sign in
    local_passwords: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    require_certificate: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


institutions = core_table(Institution)


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
    # destination health (0017): when its current outage was last reported to its institution's contacts
    down_alerted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # query/retrieve from the hub (0015): which of C-FIND, C-MOVE and C-GET this node may use on the hub's listener; what it sees is its institution's scope
    allow_find: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    allow_move: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    allow_get: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")


nodes = core_table(Node)


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


ris_endpoints = core_table(RisEndpoint)


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


worklists = core_table(Worklist)
