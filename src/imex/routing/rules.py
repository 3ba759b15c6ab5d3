"""Static routing rules from the TOML file.

    [[rules]]
    name = "CT and MR from King's go to Imperial"
    source = ["KINGS_PACS"]          # node names or calling AE titles (any when omitted)
    source_institution = ["RJZ"]     # ODS codes of the sending institution (any when omitted)
    modality = ["CT", "MR"]          # any of the study's modalities (any when omitted)
    called_aet = ["IMEX"]            # the AE title the sender called (any when omitted)
    match = { StudyDescription = "*HEAD*", AccessionNumber = "RJZ*" }   # wildcards * and ?
    to = ["RYJ", "STGEORGES_PACS"]   # ODS codes (the institution's destination nodes) or node names
    priority = "emergency"           # emergency | urgent | routine (default routine)
    recipient = "Stroke team"        # named recipient of the transfers this rule makes (optional)

A study matches when every condition given holds; every matching rule adds its destinations. The
transfers get the highest priority of the matching rules; an emergency rule routes a study as its
instances arrive, without waiting for it to be stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from imex.config import ConfigError
from imex.routing import priority as priority_levels

MATCH_FIELDS = (
    "StudyDescription",
    "AccessionNumber",
    "PatientID",
    "ReferringPhysicianName",
    "SeriesDescription",
    "BodyPartExamined",
    "StudyDate",
)
_KEYS = {
    "name",
    "source",
    "source_institution",
    "modality",
    "called_aet",
    "match",
    "to",
    "priority",
    "recipient",
    "retention_hours",
}


@dataclass(frozen=True)
class StudyFacts:
    """What a rule can look at: the study's index fields and how its instances arrived."""

    source_nodes: frozenset[str]  # node names and calling AE titles, upper case
    source_institution: str
    modalities: frozenset[str]
    called_aets: frozenset[str]
    fields: dict[str, list[str]]  # match field -> values (series-level fields have several)


@dataclass(frozen=True)
class Rule:
    name: str
    to: tuple[str, ...]
    source: frozenset[str] = frozenset()
    source_institution: frozenset[str] = frozenset()
    modality: frozenset[str] = frozenset()
    called_aet: frozenset[str] = frozenset()
    match: dict[str, str] = field(default_factory=dict)
    retention_hours: int | None = None  # how long the hub keeps studies this rule routes (None: the default)
    priority: int = priority_levels.ROUTINE
    recipient: str = ""

    def matches(self, facts: StudyFacts) -> bool:
        if self.source and not self.source & facts.source_nodes:
            return False
        if self.source_institution and facts.source_institution not in self.source_institution:
            return False
        if self.modality and not self.modality & facts.modalities:
            return False
        if self.called_aet and not self.called_aet & facts.called_aets:
            return False
        for key, pattern in self.match.items():
            values = facts.fields.get(key, [])
            if not any(fnmatchcase(v.upper(), pattern.upper()) for v in values):
                return False
        return True


def _names(raw: object, where: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where} must be a string or a list of strings")
    return frozenset(i.strip().upper() for i in items if i.strip())


def parse_rules(tables: list[dict]) -> list[Rule]:
    """Validate [[rules]] tables; a mistake stops start-up with a message that says which rule."""
    rules: list[Rule] = []
    for index, table in enumerate(tables, 1):
        label = f"rule {index} ({table.get('name', 'unnamed')})"
        unknown = set(table) - _KEYS
        if unknown:
            raise ConfigError(f"{label}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        to = _names(table.get("to"), f"{label}: to")
        if not to:
            raise ConfigError(f"{label}: `to` must name at least one destination (ODS code or node name)")
        match = table.get("match", {})
        if not isinstance(match, dict):
            raise ConfigError(f'{label}: match must be a table such as {{ StudyDescription = "*HEAD*" }}')
        for key, value in match.items():
            if key not in MATCH_FIELDS:
                raise ConfigError(f"{label}: cannot match on {key}; choose from {', '.join(MATCH_FIELDS)}")
            if not isinstance(value, str):
                raise ConfigError(f"{label}: match.{key} must be a string pattern")
        try:
            level = priority_levels.parse(table.get("priority", "routine"))
        except ValueError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        hours = table.get("retention_hours")
        if hours is not None and (not isinstance(hours, int) or isinstance(hours, bool) or hours < 0):
            raise ConfigError(f"{label}: retention_hours must be a whole number of hours (0: keep until deleted)")
        recipient = table.get("recipient", "")
        if not isinstance(recipient, str) or len(recipient) > 200:
            raise ConfigError(f"{label}: recipient must be a string of at most 200 characters")
        rules.append(
            Rule(
                name=str(table.get("name") or f"rule {index}"),
                to=tuple(sorted(to)),
                source=_names(table.get("source"), f"{label}: source"),
                source_institution=_names(table.get("source_institution"), f"{label}: source_institution"),
                modality=_names(table.get("modality"), f"{label}: modality"),
                called_aet=_names(table.get("called_aet"), f"{label}: called_aet"),
                match=dict(match),
                priority=level,
                recipient=recipient.strip(),
                retention_hours=hours,
            )
        )
    return rules
