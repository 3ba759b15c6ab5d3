"""Discoverability: whether, and by whom, an institution's holdings can be found in the locator. Nobody
(the default), everyone, or (`restricted`) named partner institutions and the members of named networks
(a stroke network). The query clause that applies it lives in imex.auth.scope with every other
visibility rule; this module changes the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imex.db.models import (
    DISCOVERABILITY,
    Institution,
    LocatorNetwork,
    LocatorNetworkMember,
    LocatorPartner,
    LocatorPolicy,
    LocatorSharedNetwork,
    utcnow,
)
from imex.errors import Invalid


class PolicyError(Invalid, ValueError):
    """A discoverability setting that cannot be applied; the message says why."""


@dataclass
class Discoverability:
    ods: str
    mode: str = "none"
    partners: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"institution": self.ods, "mode": self.mode, "partners": self.partners, "networks": self.networks}


def _institution(s: Session, ods: str) -> Institution:
    inst = s.scalar(select(Institution).where(Institution.ods_code == ods.strip().upper()))
    if inst is None:
        raise PolicyError(f"no institution has the ODS code {ods!r}")
    return inst


def _network(s: Session, name: str) -> LocatorNetwork:
    net = s.scalar(select(LocatorNetwork).where(LocatorNetwork.name == name.strip()))
    if net is None:
        raise PolicyError(f"no network named {name!r}")
    return net


def get(s: Session, institution_id: int) -> Discoverability:
    inst = s.get(Institution, institution_id)
    if inst is None:
        raise PolicyError(f"no institution {institution_id}")
    row = s.scalar(select(LocatorPolicy).where(LocatorPolicy.institution_id == institution_id))
    partners = s.scalars(
        select(Institution.ods_code)
        .join(LocatorPartner, LocatorPartner.partner_id == Institution.id)
        .where(LocatorPartner.institution_id == institution_id)
        .order_by(Institution.ods_code)
    ).all()
    networks = s.scalars(
        select(LocatorNetwork.name)
        .join(LocatorSharedNetwork, LocatorSharedNetwork.network_id == LocatorNetwork.id)
        .where(LocatorSharedNetwork.institution_id == institution_id)
        .order_by(LocatorNetwork.name)
    ).all()
    return Discoverability(inst.ods_code, row.mode if row else "none", list(partners), list(networks))


def set_policy(
    s: Session,
    institution_id: int,
    mode: str,
    *,
    partners: list[str] | None = None,
    networks: list[str] | None = None,
    actor: str = "",
) -> Discoverability:
    """Replace an institution's discoverability (partners and networks matter in `restricted` mode)."""
    if mode not in DISCOVERABILITY:
        raise PolicyError(f"mode must be one of {', '.join(DISCOVERABILITY)}")
    partner_ids = [_institution(s, ods).id for ods in partners or []]
    if institution_id in partner_ids:
        raise PolicyError("an institution is not its own partner (its users always find its holdings)")
    network_ids = [_network(s, name).id for name in networks or []]
    row = s.scalar(select(LocatorPolicy).where(LocatorPolicy.institution_id == institution_id))
    if row is None:
        row = LocatorPolicy(institution_id=institution_id)
        s.add(row)
    row.mode, row.updated_at, row.updated_by = mode, utcnow(), actor[:64]
    if partners is not None:
        s.execute(delete(LocatorPartner).where(LocatorPartner.institution_id == institution_id))
        s.add_all(LocatorPartner(institution_id=institution_id, partner_id=pid) for pid in dict.fromkeys(partner_ids))
    if networks is not None:
        s.execute(delete(LocatorSharedNetwork).where(LocatorSharedNetwork.institution_id == institution_id))
        s.add_all(
            LocatorSharedNetwork(institution_id=institution_id, network_id=nid) for nid in dict.fromkeys(network_ids)
        )
    s.flush()
    return get(s, institution_id)


def set_network(s: Session, name: str, members: list[str], description: str = "") -> list[str]:
    """Create or replace a network and its member institutions; returns the members' ODS codes."""
    name = name.strip()
    if not name or len(name) > 64:
        raise PolicyError("a network needs a name of at most 64 characters")
    ids = [_institution(s, ods).id for ods in members]
    net = s.scalar(select(LocatorNetwork).where(LocatorNetwork.name == name))
    if net is None:
        net = LocatorNetwork(name=name, description=description[:200])
        s.add(net)
        s.flush()
    elif description:
        net.description = description[:200]
    s.execute(delete(LocatorNetworkMember).where(LocatorNetworkMember.network_id == net.id))
    s.add_all(LocatorNetworkMember(network_id=net.id, institution_id=i) for i in dict.fromkeys(ids))
    s.flush()
    return networks(s).get(name, [])


def networks(s: Session) -> dict[str, list[str]]:
    """Every network with its members' ODS codes."""
    found: dict[str, list[str]] = {n: [] for n in s.scalars(select(LocatorNetwork.name).order_by(LocatorNetwork.name))}
    for name, ods in s.execute(
        select(LocatorNetwork.name, Institution.ods_code)
        .join(LocatorNetworkMember, LocatorNetworkMember.network_id == LocatorNetwork.id)
        .join(Institution, Institution.id == LocatorNetworkMember.institution_id)
        .order_by(Institution.ods_code)
    ):
        found[name].append(ods)
    return found
