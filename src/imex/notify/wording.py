"""How people read what DICOM stores: dates, counts, names, sex and study summaries in the words of a
notification, an e-mail or a page, instead of the codes in the headers ("CT of 20261207", "1 images",
"JONES^ALAN", "O")."""

from __future__ import annotations

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SEX = {"M": "male", "F": "female", "O": "other", "": "unknown"}


def human_date(yyyymmdd: str | None) -> str:
    """A DICOM date (DA) as "7 Dec 2026"; anything else as it is, and "unknown date" for nothing."""
    value = (yyyymmdd or "").strip()
    if len(value) == 8 and value.isdigit() and 1 <= int(value[4:6]) <= 12:
        return f"{int(value[6:8])} {_MONTHS[int(value[4:6]) - 1]} {value[0:4]}"
    return value or "unknown date"


def count(n: int | None, singular: str, plural: str | None = None) -> str:
    """ "1 image", "3 images"."""
    number = n or 0
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


def sex(code: str | None) -> str:
    """Patient's Sex (M, F, O, empty) in words."""
    value = (code or "").strip().upper()
    return _SEX.get(value, value)


def person(dicom_name: str | None) -> str:
    """A person name (PN: FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX) as a person reads it: "JONES, Alan"."""
    parts = (dicom_name or "").split("=")[0].split("^")
    family = parts[0].strip()
    given = " ".join(p.strip() for p in parts[1:3] if p.strip())
    return f"{family.upper()}, {given.title()}" if given else family.upper()


def study(modalities: str | None, study_date: str | None, images: int | None = None) -> str:
    """ "CT study of 7 Dec 2026, 24 images" for notifications and e-mails."""
    kinds = " ".join(m for m in (modalities or "").split("\\") if m)
    what = f"{kinds} study" if kinds else "Study"
    text = f"{what} of {human_date(study_date)}"
    return f"{text}, {count(images, 'image')}" if images is not None else text
