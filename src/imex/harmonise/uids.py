"""New UIDs for coerced and de-identified copies: derived from the original with a keyed hash, so every
instance, retry and process maps a UID the same way without keeping a table."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

ORIGINAL_ATTRIBUTES = 0x04000561


def new_uid(key: bytes, scope: str, uid: str) -> str:
    """A UID derived from an original one with a keyed hash: the same in every instance, retry and
    process for one scope (destination), and not reversible without the key."""
    digest = hmac.new(key, f"{scope}\x00{uid}".encode(), hashlib.sha256).digest()[:16]
    return "2.25." + str(uuid.UUID(bytes=digest, version=4).int)


def walk_uids(ds: Dataset, replace) -> None:
    """Replace every instance-specific UID (not the standard's own: SOP classes, transfer syntaxes,
    coding schemes) in the dataset and its sequences; the record of earlier changes (Original Attributes
    Sequence) keeps the values it recorded."""
    for elem in ds:
        if elem.tag == ORIGINAL_ATTRIBUTES:
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                walk_uids(item, replace)
        elif elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            mapped = [v if str(v) in UID_dictionary else replace(str(v)) for v in values]
            elem.value = mapped if elem.VM > 1 else mapped[0]
