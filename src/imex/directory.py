"""Institutions and their DICOM nodes: adding, listing, removing, loading from the TOML file, and the
cached lookups the listener makes on every association."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from imex.db import Database
from imex.db.models import Folder, Institution, Node, Transfer
from imex.errors import Conflict, Invalid, NotFound

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, no control chars
_ODS_RE = re.compile(r"^[A-Z0-9]{3,10}$")


class DirectoryError(Invalid, ValueError):
    """A directory change that cannot be made; the message says why and what to do."""


class NameInUse(DirectoryError, Conflict):
    """An ODS code, node name, AE title or alias is taken already: each identifies one thing."""


@dataclass(frozen=True)
class NodeInfo:
    """A node as the hot path needs it, detached from any session."""

    id: int
    name: str
    ae_title: str
    host: str
    port: int
    institution_id: int
    ods_code: str
    alias: str | None
    destination: bool
    max_associations: int | None
    contact_email: str | None
    enabled: bool
    tls: bool = False  # DICOM over TLS only, with a certificate issued to this node
    # which Query/Retrieve services it may use on the hub's listener (C-FIND, C-MOVE, C-GET)
    allow_find: bool = True
    allow_move: bool = True
    allow_get: bool = True


def check_ae_title(value: str) -> str:
    value = value.strip()
    if not _AE_RE.match(value):
        raise DirectoryError(f"AE title {value!r} must be 1-16 printable characters without a backslash")
    return value


CONFIRM_METHODS = ("none", "commitment", "count")


def check_confirm_method(value: str) -> str:
    """How delivery to a node is confirmed: none, commitment (Storage Commitment) or count (C-FIND)."""
    method = (value or "none").strip().lower()
    if method not in CONFIRM_METHODS:
        raise DirectoryError(f"confirm must be one of {', '.join(CONFIRM_METHODS)}, not {value!r}")
    return method


def check_ods(value: str) -> str:
    value = value.strip().upper()
    if not _ODS_RE.match(value):
        raise DirectoryError(f"ODS code {value!r} must be 3-10 letters or digits (e.g. RJZ)")
    return value


def add_institution(
    db: Database,
    ods_code: str,
    name: str,
    *,
    alias: str | None = None,
    contact_email: str | None = None,
    update: bool = False,
) -> Institution:
    """Create (or with update=True, change) an institution; its alias defaults to its ODS code."""
    ods = check_ods(ods_code)
    alias = check_ae_title(alias) if alias else ods
    with db.session() as s:
        inst = s.scalar(select(Institution).where(Institution.ods_code == ods))
        if inst is not None and not update:
            raise NameInUse(f"institution {ods} exists already")
        clash = s.scalar(select(Institution).where(Institution.alias == alias, Institution.ods_code != ods))
        if clash is not None:
            raise NameInUse(f"alias {alias} is already used by institution {clash.ods_code}")
        if inst is None:
            inst = Institution(ods_code=ods, name=name, alias=alias, contact_email=contact_email)
            s.add(inst)
        else:
            inst.name, inst.alias = name or inst.name, alias
            inst.contact_email = contact_email if contact_email is not None else inst.contact_email
        s.flush()
        return inst


def list_institutions(db: Database) -> list[Institution]:
    with db.session() as s:
        return list(s.scalars(select(Institution).order_by(Institution.ods_code)))


def set_local_passwords(session: Session, ods_code: str, allowed: bool) -> Institution:
    """Whether the institution's users may sign in with an imex password; off, only through its identity
    provider ([[oidc]]) or a certificate. Password sign-ins and API token requests are then refused."""
    ods = check_ods(ods_code)
    inst = session.scalar(select(Institution).where(Institution.ods_code == ods))
    if inst is None:
        raise NotFound(f"no institution has the ODS code {ods}; `imex institution list` shows them")
    inst.local_passwords = allowed
    session.flush()
    return inst


def add_node(
    db: Database,
    name: str,
    ae_title: str,
    host: str,
    port: int,
    ods_code: str,
    *,
    alias: str | None = None,
    contact_email: str | None = None,
    destination: bool = True,
    max_associations: int | None = None,
    update: bool = False,
    tls: bool | None = None,
    confirm: str | None = None,
    query_retrieve: bool | None = None,
    allow_find: bool | None = None,
    allow_move: bool | None = None,
    allow_get: bool | None = None,
) -> Node:
    """Register a DICOM node of an institution (create, or with update=True, change). The tls, confirm,
    query_retrieve and allow_* settings are left as they are when None (a new node gets their defaults)."""
    ae = check_ae_title(ae_title)
    if not 0 < int(port) < 65536:
        raise DirectoryError(f"port {port} must be between 1 and 65535")
    if not host.strip():
        raise DirectoryError("host must be a name or an address")
    alias = check_ae_title(alias) if alias else None
    if confirm is not None:  # how delivery to it is confirmed (routing/confirm.py)
        confirm = check_confirm_method(confirm)
    with db.session() as s:
        inst = s.scalar(select(Institution).where(Institution.ods_code == ods_code.strip().upper()))
        if inst is None:
            raise DirectoryError(f"no institution {ods_code}: add it first with `imex institution add`")
        node = s.scalar(select(Node).where(Node.name == name))
        if node is not None and not update:
            raise NameInUse(f"node {name} exists already")
        other = s.scalar(select(Node).where(Node.ae_title == ae, Node.name != name))
        if other is not None:
            raise NameInUse(f"AE title {ae} is already node {other.name}; AE titles identify callers")
        if alias and s.scalar(select(Node).where(Node.alias == alias, Node.name != name)) is not None:
            raise NameInUse(f"alias {alias} is already used by another node")
        if node is None:
            node = Node(name=name)
            s.add(node)
        node.ae_title, node.host, node.port, node.institution_id = ae, host.strip(), int(port), inst.id
        node.alias, node.contact_email, node.destination = alias, contact_email, destination
        node.max_associations = max_associations
        node.enabled = True
        if tls is not None:
            node.tls = tls
        if confirm is not None:
            node.confirm = confirm
        if query_retrieve is not None:  # the hub may C-FIND/C-MOVE it (exchanges)
            node.query_retrieve = query_retrieve
        # which Query/Retrieve services it may use on the hub's listener
        if allow_find is not None:
            node.allow_find = allow_find
        if allow_move is not None:
            node.allow_move = allow_move
        if allow_get is not None:
            node.allow_get = allow_get
        s.flush()
        return node


def _node_named(s: Session, name: str) -> Node:
    node = s.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise NotFound(f"no node named {name}")
    return node


def remove_node(db: Database, name: str) -> bool:
    """Delete a node; True when deleted, False when transfers refer to it and it was disabled instead."""
    with db.session() as s:
        node = _node_named(s, name)
        if s.scalar(select(Transfer.id).where(Transfer.destination_node_id == node.id).limit(1)) is not None:
            node.enabled = False  # keep the transfer history readable; the node no longer connects
            return False
        s.delete(node)
        return True


def require_tls(db: Database, name: str, required: bool = True) -> None:
    """Make a node use DICOM over TLS only (required=False: allow plain TCP again)."""
    with db.session() as s:
        _node_named(s, name).tls = required


def load_from_config(db: Database, institutions: list[dict], nodes: list[dict]) -> None:
    """Declare institutions and nodes from the TOML file (created or updated on start-up)."""
    for item in institutions:
        try:
            add_institution(
                db,
                item["ods"],
                item.get("name", item["ods"]),
                alias=item.get("alias"),
                contact_email=item.get("contact_email"),
                update=True,
            )
            if "local_passwords" in item:  # single sign-on only: set in the file, like its [[oidc]] provider
                with db.session() as s:
                    set_local_passwords(s, item["ods"], bool(item["local_passwords"]))
        except KeyError as exc:
            raise DirectoryError(f"[[institutions]] entry {item} lacks {exc}") from None
    for item in nodes:
        try:
            add_node(
                db,
                item["name"],
                item["ae_title"],
                item["host"],
                int(item["port"]),
                item["institution"],
                alias=item.get("alias"),
                contact_email=item.get("contact_email"),
                destination=bool(item.get("destination", True)),
                max_associations=item.get("max_associations"),
                update=True,
                tls=bool(item["tls"]) if "tls" in item else None,
                confirm=str(item["confirm"]) if "confirm" in item else None,
                query_retrieve=bool(item["query_retrieve"]) if "query_retrieve" in item else None,
                allow_find=bool(item["allow_find"]) if "allow_find" in item else None,
                allow_move=bool(item["allow_move"]) if "allow_move" in item else None,
                allow_get=bool(item["allow_get"]) if "allow_get" in item else None,
            )
        except KeyError as exc:
            raise DirectoryError(f"[[nodes]] entry {item} lacks {exc}") from None


def _node_infos(db: Database, *where: ColumnElement[bool]) -> list[NodeInfo]:
    with db.read_sessions() as s:  # reads only: on SQLite it does not wait for the write lock
        rows = s.execute(select(Node, Institution.ods_code).join(Institution).where(*where)).all()
        return [
            NodeInfo(
                n.id,
                n.name,
                n.ae_title,
                n.host,
                n.port,
                n.institution_id,
                ods,
                n.alias,
                n.destination,
                n.max_associations,
                n.contact_email,
                n.enabled,
                bool(n.tls),
                allow_find=bool(n.allow_find),
                allow_move=bool(n.allow_move),
                allow_get=bool(n.allow_get),
            )
            for n, ods in rows
        ]


def all_nodes(db: Database) -> list[NodeInfo]:
    return sorted(_node_infos(db), key=lambda n: n.name)


def find_node(db: Database, name: str) -> NodeInfo | None:
    """The node called NAME, or None."""
    found = _node_infos(db, Node.name == name)
    return found[0] if found else None


def addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(ipaddress.ip_address(info[4][0])) for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, ValueError):
        return set()


def normal_ip(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


class NodeCache:
    """Nodes and aliases by AE title, refreshed from the database every few seconds, so a node added by
    `imex node add` in another process is seen without a restart and the hot path does not query."""

    def __init__(self, db: Database, ttl: float = 2.0) -> None:
        self.db = db
        self.ttl = ttl
        self._lock = threading.Lock()
        self._loaded = 0.0
        self._by_aet: dict[str, NodeInfo] = {}
        self._aliases: dict[str, tuple[str, int]] = {}
        self._resolved: dict[str, tuple[float, set[str]]] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._loaded < self.ttl:
            return
        with self._lock:
            if now - self._loaded < self.ttl:
                return
            nodes = _node_infos(self.db)
            aliases: dict[str, tuple[str, int]] = {}
            with self.db.read_sessions() as s:  # during association negotiation: never wait for a writer
                for inst in s.scalars(select(Institution)):
                    aliases[(inst.alias or inst.ods_code).upper()] = ("institution", inst.id)
                for folder_id, folder_alias in s.execute(
                    select(Folder.id, Folder.alias).where(Folder.alias.is_not(None))
                ):
                    if folder_alias is not None:
                        aliases[folder_alias.upper()] = ("folder", folder_id)
            for n in nodes:
                if n.alias and n.enabled:
                    aliases[n.alias.upper()] = ("node", n.id)
            self._by_aet = {n.ae_title: n for n in nodes if n.enabled}
            self._aliases = aliases
            self._loaded = time.monotonic()

    def invalidate(self) -> None:
        self._loaded = 0.0

    def by_aet(self, ae_title: str) -> NodeInfo | None:
        self._refresh()
        return self._by_aet.get(ae_title.strip())

    def alias(self, called_aet: str) -> tuple[str, int] | None:
        """("institution", id), ("node", id) or ("folder", id) when the called AE title is an alias."""
        self._refresh()
        return self._aliases.get(called_aet.strip().upper())

    def address_matches(self, node: NodeInfo, peer: str) -> bool:
        now = time.monotonic()
        cached = self._resolved.get(node.host)
        if cached is None or now - cached[0] > 60:
            cached = (now, {normal_ip(a) for a in addresses(node.host)})
            self._resolved[node.host] = cached
        return normal_ip(peer) in cached[1]
