"""RIS endpoints of institutions: declared in imex.toml ([[ris]]), stored in the database like nodes, and
looked up for each incoming message by its sending facility (MSH-4) and the peer's address."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, select

from imex.db import Database
from imex.db.models import Institution, RisEndpoint, institutions, ris_endpoints
from imex.directory import DirectoryError, addresses, check_ods, normal_ip


def add_ris(
    db: Database,
    name: str,
    ods_code: str,
    *,
    host: str = "",
    port: int = 0,
    facilities: Sequence[str] | str = (),
    peer_host: str = "",
    receiving_application: str = "",
    query_template: str = "",
) -> RisEndpoint:
    """Create or update a RIS endpoint; its facilities default to the institution's ODS code."""
    ods = check_ods(ods_code)
    if port and not 0 < int(port) < 65536:
        raise DirectoryError(f"RIS {name}: port {port} must be between 1 and 65535")
    names = facilities.split() if isinstance(facilities, str) else list(facilities)
    with db.session() as s:
        inst = s.scalar(select(Institution).where(Institution.ods_code == ods))
        if inst is None:
            raise DirectoryError(f"RIS {name}: no institution {ods}; declare it in [[institutions]] first")
        ris = s.scalar(select(RisEndpoint).where(RisEndpoint.name == name))
        if ris is None:
            ris = RisEndpoint(name=name)
            s.add(ris)
        ris.institution_id, ris.host, ris.port = inst.id, host.strip(), int(port or 0)
        ris.facilities = " ".join(n.strip().upper() for n in (names or [ods]) if n.strip())
        ris.peer_host = peer_host.strip()
        ris.receiving_application = receiving_application or name
        ris.query_template = query_template
        ris.enabled = True
        s.flush()
        return ris


def load_ris_from_config(db: Database, entries: list[dict]) -> None:
    """[[ris]] entries: name, institution (ODS), host, port, facilities, peer_host, receiving_application,
    query_template."""
    for item in entries:
        try:
            add_ris(
                db,
                item["name"],
                item["institution"],
                host=item.get("host", ""),
                port=int(item.get("port", 0)),
                facilities=item.get("facilities", ()),
                peer_host=item.get("peer_host", item.get("host", "")),
                receiving_application=item.get("receiving_application", ""),
                query_template=item.get("query_template", ""),
            )
        except KeyError as exc:
            raise DirectoryError(f"[[ris]] entry {item} lacks {exc}") from None


def find_sender(conn: Connection, facility: str, peer: str):
    """The enabled RIS endpoint that sends as `facility` from address `peer`, with its ODS code; None when
    no endpoint claims the facility, or none of those that do may connect from there."""
    rows = conn.execute(
        select(ris_endpoints, institutions.c.ods_code)
        .join(institutions, institutions.c.id == ris_endpoints.c.institution_id)
        .where(ris_endpoints.c.enabled.is_(True))
    ).all()
    facility = facility.strip().upper()
    for row in rows:
        if facility and facility in row.facilities.split():
            if not row.peer_host or normal_ip(peer) in {normal_ip(a) for a in addresses(row.peer_host)}:
                return row
    return None


def endpoint_for_institution(conn: Connection, institution_id: int):
    """The RIS that receives reports for an institution (the first enabled one with a port), or None."""
    return conn.execute(
        select(ris_endpoints)
        .where(
            ris_endpoints.c.institution_id == institution_id,
            ris_endpoints.c.enabled.is_(True),
            ris_endpoints.c.port > 0,
        )
        .order_by(ris_endpoints.c.id)
        .limit(1)
    ).first()
