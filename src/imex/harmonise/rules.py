"""Header harmonisation rules: `[[harmonise]]` tables of imex.toml, parsed and checked at start-up.

    [[harmonise]]
    name = "Imperial files by NHS number"
    destination = ["RYJ"]              # destination ODS codes, node names or AE titles (any when omitted)
    source = ["KINGS_PACS"]            # sending node names or AE titles (any when omitted)
    institution = ["RJZ"]              # ODS codes of the sending institution (any when omitted)
    nhs_number = "require"             # off | use (when found) | require (hold for reconciliation)
    nhs_attribute = "(0010,1002)"      # another place to look for the NHS number (optional)
    accession_prefix = "{source_ods}-" # or accession_map = { "A123" = "B456" }
    institution_name = "{source_name}" # or any text
    set = { StationName = "IMEX" }     # set attributes (string values, placeholders allowed)
    map = { Modality = { "PT" = "NM" } }
    blank = ["ReferringPhysicianName"]
    uids = "keep"                      # keep | new (consistent per destination)
    deidentify = false                 # PS3.15 basic profile, pseudonym per patient

Every rule whose selectors all hold applies, in file order. A mistake stops start-up with the file, the
line and the rule's name, so a hub never starts with a rule that would send something unintended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.tag import Tag
from pydicom.valuerep import validate_value

from imex.config import Config, ConfigError

NHS_MODES = ("off", "use", "require")
UID_MODES = ("keep", "new")
PLACEHOLDERS = ("source_ods", "source_name", "source_aet", "destination_ods", "destination_name")
# Attributes a rule may set, map or blank: text, not UIDs (see `uids`) nor anything that describes pixels.
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
_KEYS = {
    "name",
    "destination",
    "source",
    "institution",
    "nhs_number",
    "nhs_attribute",
    "accession_prefix",
    "accession_map",
    "institution_name",
    "set",
    "map",
    "blank",
    "uids",
    "deidentify",
}
_HEADER = re.compile(r"^\s*\[\[\s*harmonise\s*\]\]")
_ANY_HEADER = re.compile(r"^\s*\[")
_FIELD = re.compile(r"\{([a-z_]+)\}")
_TAG = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$")


@dataclass(frozen=True)
class HarmoniseRule:
    name: str
    line: int | None = None
    destination: frozenset[str] = frozenset()
    source: frozenset[str] = frozenset()
    institution: frozenset[str] = frozenset()
    nhs_number: str = "off"
    nhs_attribute: str | None = None
    accession_prefix: str = ""
    accession_map: dict[str, str] = field(default_factory=dict)
    institution_name: str | None = None
    set: dict[str, str] = field(default_factory=dict)
    map: dict[str, dict[str, str]] = field(default_factory=dict)
    blank: tuple[str, ...] = ()
    uids: str = "keep"
    deidentify: bool = False

    def applies(self, destination: frozenset[str], source: frozenset[str], institution: str) -> bool:
        """Whether the rule's selectors hold for a transfer (all names upper case)."""
        if self.destination and not self.destination & destination:
            return False
        if self.source and not self.source & source:
            return False
        return not self.institution or institution.upper() in self.institution


class _Where:
    """Line numbers of [[harmonise]] tables and their keys in the TOML text, for error messages."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []
        if path is not None and path.exists():
            self.lines = path.read_text().splitlines()
        self.headers = [i + 1 for i, line in enumerate(self.lines) if _HEADER.match(line)]

    def line(self, index: int, key: str | None = None) -> int | None:
        if index >= len(self.headers):
            return None
        start = self.headers[index]
        if key:
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for number in range(start + 1, len(self.lines) + 1):
                text = self.lines[number - 1]
                if _ANY_HEADER.match(text):
                    break
                if pattern.match(text):
                    return number
        return start

    def error(self, index: int, name: str, key: str | None, message: str) -> ConfigError:
        line = self.line(index, key)
        place = f"{self.path}:{line}: " if self.path is not None and line else ""
        return ConfigError(f"{place}harmonise rule {index + 1} ({name!r}): {message}")


def attribute_keyword(name: str) -> str | None:
    """The dictionary keyword of a keyword or a `gggg,eeee` tag; None when the dictionary has no such
    attribute."""
    match = _TAG.match(name.strip())
    if match:
        try:
            return keyword_for_tag(Tag(int(match.group(1), 16), int(match.group(2), 16))) or None
        except ValueError:
            return None
    return name.strip() if tag_for_keyword(name.strip()) is not None else None


def _names(raw: object, fail) -> frozenset[str]:
    if raw is None:
        return frozenset()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise fail("must be a string or a list of strings")
    return frozenset(i.strip().upper() for i in items if i.strip())


def _template(value: object, fail) -> str:
    if not isinstance(value, str):
        raise fail(f"must be a string, not {value!r}")
    for name in _FIELD.findall(value):
        if name not in PLACEHOLDERS:
            raise fail(f"unknown placeholder {{{name}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    return value


def _check_value(keyword: str, value: str, fail) -> None:
    """The value (placeholders filled with typical values) must be valid for the attribute's VR."""
    sample = _FIELD.sub("RJZ", value)
    try:
        validate_value(dictionary_VR(keyword), sample, pydicom_config.RAISE)
    except ValueError as exc:
        raise fail(f"{value!r} is not a valid {keyword}: {exc}") from None


def _text_attribute(name: object, fail) -> str:
    if not isinstance(name, str):
        raise fail(f"attribute names must be strings, not {name!r}")
    keyword = attribute_keyword(name)
    if keyword is None:
        raise fail(f"unknown attribute {name!r} (use a DICOM keyword such as StationName, or gggg,eeee)")
    vr = dictionary_VR(keyword)
    if vr not in TEXT_VRS:
        what = 'UIDs change only with `uids = "new"`' if vr == "UI" else "only text attributes can be changed"
        raise fail(f"{keyword} has VR {vr}: {what}")
    return keyword


def _rule(table: dict[str, Any], index: int, where: _Where) -> HarmoniseRule:
    name = str(table.get("name") or f"harmonise rule {index + 1}")

    def failer(key: str | None):
        return lambda message: where.error(index, name, key, f"{key + ': ' if key else ''}{message}")

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise failer(unknown[0])(f"unknown key; allowed: {', '.join(sorted(_KEYS))}")
    nhs_mode = table.get("nhs_number", "off")
    if nhs_mode not in NHS_MODES:
        raise failer("nhs_number")(f"must be one of {', '.join(NHS_MODES)}, not {nhs_mode!r}")
    uids = table.get("uids", "keep")
    if uids not in UID_MODES:
        raise failer("uids")(f"must be one of {', '.join(UID_MODES)}, not {uids!r}")
    deidentify = table.get("deidentify", False)
    if not isinstance(deidentify, bool):
        raise failer("deidentify")(f"must be true or false, not {deidentify!r}")
    nhs_attribute = table.get("nhs_attribute")
    if nhs_attribute is not None:
        nhs_attribute = _text_attribute(nhs_attribute, failer("nhs_attribute"))
    prefix = _template(table.get("accession_prefix", ""), failer("accession_prefix"))
    if prefix:
        _check_value("AccessionNumber", prefix, failer("accession_prefix"))
    accession_map = table.get("accession_map", {})
    if not isinstance(accession_map, dict):
        raise failer("accession_map")('must be a table such as { "A123" = "B456" }')
    for new in accession_map.values():
        _check_value("AccessionNumber", _template(new, failer("accession_map")), failer("accession_map"))
    institution_name = table.get("institution_name")
    if institution_name is not None:
        institution_name = _template(institution_name, failer("institution_name"))
        _check_value("InstitutionName", institution_name, failer("institution_name"))
    to_set: dict[str, str] = {}
    raw_set = table.get("set", {})
    if not isinstance(raw_set, dict):
        raise failer("set")('must be a table such as { StationName = "IMEX" }')
    for attr, value in raw_set.items():
        keyword = _text_attribute(attr, failer("set"))
        to_set[keyword] = _template(value, failer("set"))
        _check_value(keyword, to_set[keyword], failer("set"))
    mapping: dict[str, dict[str, str]] = {}
    raw_map = table.get("map", {})
    if not isinstance(raw_map, dict):
        raise failer("map")('must be a table such as { Modality = { "PT" = "NM" } }')
    for attr, pairs in raw_map.items():
        keyword = _text_attribute(attr, failer("map"))
        if not isinstance(pairs, dict):
            raise failer("map")(f'{keyword} must map old values to new ones, e.g. {{ "OLD" = "NEW" }}')
        mapping[keyword] = {}
        for old, new in pairs.items():
            mapping[keyword][str(old)] = _template(new, failer("map"))
            _check_value(keyword, mapping[keyword][str(old)], failer("map"))
    raw_blank = table.get("blank", [])
    if isinstance(raw_blank, str) or not isinstance(raw_blank, list):
        raise failer("blank")("must be a list of attribute names")
    blank = tuple(_text_attribute(a, failer("blank")) for a in raw_blank)
    return HarmoniseRule(
        name=name,
        line=where.line(index),
        destination=_names(table.get("destination"), failer("destination")),
        source=_names(table.get("source"), failer("source")),
        institution=_names(table.get("institution"), failer("institution")),
        nhs_number=nhs_mode,
        nhs_attribute=nhs_attribute,
        accession_prefix=prefix,
        accession_map={str(k): v for k, v in accession_map.items()},
        institution_name=institution_name,
        set=to_set,
        map=mapping,
        blank=blank,
        uids=uids,
        deidentify=deidentify,
    )


def parse(tables: list[dict[str, Any]], path: Path | None = None) -> list[HarmoniseRule]:
    """Check [[harmonise]] tables; the first mistake raises ConfigError naming the file, line and rule."""
    where = _Where(path)
    return [_rule(table, index, where) for index, table in enumerate(tables)]


def from_config(config: Config) -> list[HarmoniseRule]:
    return parse(list(getattr(config, "harmonise", []) or []), config.path)
