"""Deciding where a stable study goes.

A study is stable when no instance has arrived for `routing.stable_seconds`. Its destinations come from,
in order: (1) the called AE title, when it is a destination alias; (2) destination codes in the routing
code attribute; (3) the static rules. The first that yields destinations decides. A study with none
goes to quarantine with the reason; nothing is dropped. A study that already has transfers (a late
instance, a replaced instance) goes again to the same destinations.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, exists, select, update

from imex import events
from imex.db import Database, utcnow
from imex.db.models import (
    folders,
    instances,
    institutions,
    nodes,
    patients,
    series,
    studies,
    transfers,
)
from imex.retention.policy import RetentionPolicy
from imex.routing.priority import EMERGENCY, ROUTINE
from imex.routing.queue import queue_study
from imex.routing.rules import Rule, StudyFacts

log = logging.getLogger("imex.routing")


@dataclass(frozen=True)
class Decision:
    destinations: dict[int, str]  # node id -> why
    problem: str = ""  # why there are none, for the quarantine
    priority: int = ROUTINE
    recipient: str = ""
    folders: frozenset[str] = frozenset()  # names or aliases of sharing folders to file the study in
    retention_hours: int | None = None  # the longest retention of the rules that routed it


class Router:
    def __init__(
        self, db: Database, rules: list[Rule], hub_aet: str, code_attribute: str, stable_seconds: float
    ) -> None:
        self.db = db
        self.rules = rules
        self.hub_aet = hub_aet.upper()
        self.code_attribute = code_attribute
        self.stable_seconds = stable_seconds
        self.on_queued: Callable[[], None] | None = None
        self.queued_work = False
        self.retention = RetentionPolicy()  # the hub sets its configured policy

    def route_stable(self, limit: int = 50) -> int:
        """Route every study that became stable; returns how many were routed or quarantined."""
        cutoff = utcnow() - dt.timedelta(seconds=self.stable_seconds)
        with self.db.reader() as conn:
            ids = (
                conn.execute(
                    select(studies.c.id)
                    .where(studies.c.route_state == "receiving", studies.c.last_received_at <= cutoff)
                    .order_by(studies.c.last_received_at)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            conn.rollback()
        done = 0
        for study_id in ids:
            self.queued_work = False
            if self.route_one(study_id, cutoff):
                done += 1
            if self.queued_work and self.on_queued is not None:
                self.on_queued()  # committed: wake this process's delivery workers now
        return done + self.route_emergencies(cutoff, limit)

    def route_emergencies(self, cutoff: dt.datetime, limit: int = 50) -> int:
        """Cut-through: a study still arriving that goes out as an emergency (an emergency rule matches, or
        its transfers are emergencies) is routed now, without the stability wait; each later instance
        re-opens it here at the next scan, and the delivery worker picks up late instances itself."""
        with self.db.reader() as conn:
            receiving = select(studies.c.id).where(
                studies.c.route_state == "receiving", studies.c.last_received_at > cutoff
            )
            # correlated EXISTS: the few receiving studies drive the look-up, not the whole transfers table
            ids = set(
                conn.execute(
                    receiving.where(
                        exists().where(transfers.c.study_id == studies.c.id, transfers.c.priority >= EMERGENCY)
                    ).limit(limit)
                ).scalars()
            )
            if any(rule.priority >= EMERGENCY for rule in self.rules):
                ids.update(
                    conn.execute(
                        receiving.where(~exists().where(transfers.c.study_id == studies.c.id)).limit(limit)
                    ).scalars()
                )
            conn.rollback()
        done = 0
        for study_id in sorted(ids):
            self.queued_work = False
            if self.route_one(study_id, emergency_only=True):
                done += 1
            if self.queued_work and self.on_queued is not None:
                self.on_queued()
        return done

    def route_one(self, study_id: int, cutoff: dt.datetime | None = None, emergency_only: bool = False) -> bool:
        with self.db.engine.begin() as conn:
            query = select(studies).where(studies.c.id == study_id, studies.c.route_state == "receiving")
            if cutoff is not None:
                query = query.where(studies.c.last_received_at <= cutoff)
            if self.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            study = conn.execute(query).first()
            if study is None:
                return False  # another process took it, or a new instance arrived meanwhile
            # the flows that route a study by what it belongs to (exchanges, requests) answer first
            hooked = None if emergency_only else events.first("study.stable", conn, study_id=study_id, study=study)
            if hooked == "wait":  # exchange: its C-MOVE is still under way; routed once it is complete
                return False
            if hooked == "cached":  # exchange: fetched for viewing only
                conn.execute(
                    update(studies)
                    .where(studies.c.id == study_id)
                    .values(route_state="cached", quarantine_reason=None, routed_seq=study.received_seq)
                )
                self.retention.stamp(conn, study_id, study.last_received_at)
                return True
            existing = conn.execute(
                select(transfers.c.destination_node_id, transfers.c.reason, transfers.c.priority).where(
                    transfers.c.study_id == study_id
                )
            ).all()
            if existing:
                decision = Decision(
                    {row.destination_node_id: row.reason for row in existing},
                    priority=max(row.priority or ROUTINE for row in existing),
                )
            else:
                decision = self.decide(conn, study)
            if emergency_only and (decision.priority < EMERGENCY or not decision.destinations):
                return False  # not an emergency: it waits to be stable like any other study
            filed = (
                []
                if emergency_only
                else [
                    name
                    for names in events.emit(
                        "study.filing",
                        conn,
                        study_id=study_id,
                        names=_called_aets(conn, study_id) | decision.folders,
                        who="routing",
                    )
                    for name in names
                ]
            )
            if filed and not decision.destinations:  # sent to a sharing folder only: shared, not quarantined
                conn.execute(
                    update(studies)
                    .where(studies.c.id == study_id)
                    .values(route_state="routed", quarantine_reason=None, routed_seq=study.received_seq)
                )
                log.info("study %s filed in folder(s) %s", study.study_uid, ", ".join(filed))
                return True
            if not decision.destinations:
                conn.execute(
                    update(studies)
                    .where(studies.c.id == study_id)
                    .values(
                        route_state="quarantined", quarantine_reason=decision.problem, routed_seq=study.received_seq
                    )
                )
                self.retention.stamp(conn, study_id, study.last_received_at, quarantined=True)
                log.warning("study %s quarantined: %s", study.study_uid, decision.problem)
                return True
            if decision.retention_hours is not None:
                conn.execute(
                    update(studies).where(studies.c.id == study_id).values(retention_hours=decision.retention_hours)
                )
            if queue_study(conn, study_id, decision.destinations, decision.priority, decision.recipient):
                self.queued_work = True
            conn.execute(
                update(studies)
                .where(studies.c.id == study_id)
                .values(route_state="routed", quarantine_reason=None, routed_seq=study.received_seq)
            )
            self.retention.stamp(conn, study_id, study.last_received_at)
            log.info("study %s routed to %s", study.study_uid, ", ".join(decision.destinations.values()))
            return True

    # -- deciding -----------------------------------------------------------------------------------

    def decide(self, conn: Connection, study) -> Decision:
        arrivals = conn.execute(
            select(instances.c.called_aet, instances.c.source_node_id)
            .distinct()
            .where(instances.c.study_id == study.id)
        ).all()
        source_node_ids = {row.source_node_id for row in arrivals if row.source_node_id is not None}
        called = {row[0].strip().upper() for row in arrivals if row[0]}
        problems: list[str] = []

        by_alias: dict[int, str] = {}
        for aet in sorted(called - {self.hub_aet}):
            found, problem = _alias_targets(conn, aet)
            by_alias.update({n: f"alias {aet}" for n in found})
            if problem:
                problems.append(problem)
        decided = self._without_sources(by_alias, source_node_ids, problems)
        if decided:
            return Decision(decided)
        if not called - {self.hub_aet}:
            problems.append(f"sent to {self.hub_aet}, which is no destination alias")

        codes = [c for c in (study.routing_codes or "").split("\\") if c]
        by_code: dict[int, str] = {}
        if self.code_attribute:
            if not codes:
                problems.append(f"no destination code in {self.code_attribute}")
            for code in codes:
                found, problem = resolve_targets(conn, code)
                by_code.update({n: f"code {code} in {self.code_attribute}" for n in found})
                if problem:
                    problems.append(f"{self.code_attribute} {problem}")
        decided = self._without_sources(by_code, source_node_ids, problems)
        if decided:
            return Decision(decided)

        facts = self._facts(conn, study, source_node_ids, called)
        by_rule: dict[int, str] = {}
        matched = [rule for rule in self.rules if rule.matches(facts)]
        folder_targets = {f.upper() for f in _folder_names(conn)}
        named_folders: set[str] = set()
        for rule in matched:
            for target in rule.to:
                if target.upper() in folder_targets:
                    named_folders.add(target)
                    continue
                found, problem = resolve_targets(conn, target)
                by_rule.update({n: f"rule '{rule.name}'" for n in found})
                if problem:
                    problems.append(f"rule '{rule.name}': {problem}")
        if not matched:
            problems.append(
                f"no rule matches (source {', '.join(sorted(facts.source_nodes)) or '?'}, "
                f"modality {', '.join(sorted(facts.modalities)) or '?'})"
            )
        decided = self._without_sources(by_rule, source_node_ids, problems)
        level = max((rule.priority for rule in matched), default=ROUTINE)
        recipient = next((rule.recipient for rule in matched if rule.priority == level and rule.recipient), "")
        hours = [rule.retention_hours for rule in matched if rule.retention_hours is not None]
        return Decision(
            decided,
            "" if decided else "; ".join(problems),
            level,
            recipient,
            frozenset(named_folders),
            (0 if 0 in hours else max(hours)) if hours else None,
        )

    @staticmethod
    def _without_sources(found: dict[int, str], sources: set[int], problems: list[str]) -> dict[int, str]:
        kept = {n: why for n, why in found.items() if n not in sources}
        if found and not kept:
            problems.append("the only destination found is the node that sent the study")
        return kept

    def _facts(self, conn: Connection, study, source_node_ids: set[int], called: set[str]) -> StudyFacts:
        source_names: set[str] = set()
        if source_node_ids:
            for row in conn.execute(select(nodes.c.name, nodes.c.ae_title).where(nodes.c.id.in_(source_node_ids))):
                source_names.update({row.name.upper(), row.ae_title.upper()})
        ods = conn.execute(
            select(institutions.c.ods_code).where(institutions.c.id == study.institution_id)
        ).scalar_one()
        patient_id = conn.execute(select(patients.c.patient_id).where(patients.c.id == study.patient_pk)).scalar_one()
        series_rows = conn.execute(
            select(series.c.description, series.c.body_part).where(series.c.study_id == study.id)
        ).all()
        return StudyFacts(
            source_nodes=frozenset(source_names),
            source_institution=ods,
            modalities=frozenset(m.upper() for m in (study.modalities or "").split("\\") if m),
            called_aets=frozenset(called),
            fields={
                "StudyDescription": [study.description],
                "AccessionNumber": [study.accession_number],
                "PatientID": [patient_id],
                "ReferringPhysicianName": [study.referring_physician],
                "StudyDate": [study.study_date],
                "SeriesDescription": [r.description for r in series_rows],
                "BodyPartExamined": [r.body_part for r in series_rows],
            },
        )


def _destination_nodes(conn: Connection, institution_id: int) -> list[int]:
    return list(
        conn.execute(
            select(nodes.c.id).where(
                nodes.c.institution_id == institution_id, nodes.c.destination.is_(True), nodes.c.enabled.is_(True)
            )
        ).scalars()
    )


def _folder_names(conn: Connection) -> set[str]:
    """What a rule's `to` may name to file a study in a sharing folder: folder names and aliases."""
    return {name for row in conn.execute(select(folders.c.name, folders.c.alias)) for name in row if name}


def _called_aets(conn: Connection, study_id: int) -> set[str]:
    return {
        a.strip().upper()
        for a in conn.execute(
            select(instances.c.called_aet).distinct().where(instances.c.study_id == study_id)
        ).scalars()
        if a
    }


def _alias_targets(conn: Connection, aet: str) -> tuple[list[int], str]:
    node = conn.execute(select(nodes.c.id, nodes.c.enabled).where(nodes.c.alias == aet)).first()
    if node is not None:
        return ([node.id], "") if node.enabled else ([], f"alias {aet} names a disabled node")
    inst = conn.execute(
        select(institutions.c.id).where((institutions.c.alias == aet) | (institutions.c.ods_code == aet))
    ).scalar()
    if inst is None:
        return [], f"called AE title {aet} is no alias"
    found = _destination_nodes(conn, inst)
    return found, "" if found else f"institution of alias {aet} has no destination node"


def resolve_targets(conn: Connection, target: str) -> tuple[list[int], str]:
    """Nodes for a rule or code target: a node name, else an institution's ODS code."""
    node = conn.execute(select(nodes.c.id, nodes.c.enabled).where(nodes.c.name == target)).first()
    if node is None:
        node = conn.execute(select(nodes.c.id, nodes.c.enabled).where(nodes.c.name.ilike(target))).first()
    if node is not None:
        return ([node.id], "") if node.enabled else ([], f"node {target} is disabled")
    inst = conn.execute(select(institutions.c.id).where(institutions.c.ods_code == target.upper())).scalar()
    if inst is None:
        return [], f"{target} is neither an institution's ODS code nor a node"
    found = _destination_nodes(conn, inst)
    return found, "" if found else f"institution {target} has no destination node"


@events.on("study.forwarded")
def route_forward(conn: Connection, study_id: int, institution_id: int, calling_aet: str, called_aet: str) -> None:
    """An institution the study was delivered to sends it on (A -> B -> C): the hub sends its own copy to
    the destination the forwarder's called AE title names (never back to the forwarder's own nodes)."""
    found, problem = _alias_targets(conn, called_aet)
    ods = conn.execute(select(institutions.c.ods_code).where(institutions.c.id == institution_id)).scalar()
    own = set(conn.execute(select(nodes.c.id).where(nodes.c.institution_id == institution_id)).scalars())
    targets = [n for n in found if n not in own]
    if not targets:
        log.info(
            "study %s sent on by %s (%s) names no other destination: %s",
            study_id,
            ods,
            calling_aet,
            problem or f"{called_aet} is the forwarder's own",
        )
        return
    queue_study(conn, study_id, {n: f"forwarded by {ods} ({calling_aet}) to {called_aet}" for n in targets})
    log.info("study %s sent on by %s to %s", study_id, ods, called_aet)


def route_manually(db: Database, study_uid: str, targets: list[str], who: str = "operator") -> list[int]:
    """Send a (quarantined or any) study to the given ODS codes or node names; returns transfer ids."""
    with db.engine.begin() as conn:
        study = conn.execute(select(studies).where(studies.c.study_uid == study_uid)).first()
        if study is None:
            raise ValueError(f"no study {study_uid}")
        destinations: dict[int, str] = {}
        for target in targets:
            found, problem = resolve_targets(conn, target)
            if problem:
                raise ValueError(problem)
            destinations.update({n: f"routed by {who} to {target}" for n in found})
        ids = queue_study(conn, study.id, destinations)
        conn.execute(
            update(studies)
            .where(studies.c.id == study.id)
            .values(route_state="routed", quarantine_reason=None, routed_seq=study.received_seq)
        )
        return ids
