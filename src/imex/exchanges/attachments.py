"""Documents attached to a transaction: a PDF, a PNG or JPEG image, or plain text. The type is decided
by the bytes (magic numbers), never by the name or the declared type alone, and must agree with the file's
extension; the bytes go through the virus-scanning hook (`exchange.scan_command`) before they are kept in
the blob store. Downloads always carry the stored type and Content-Disposition: attachment."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from dataclasses import dataclass

from sqlalchemy import Connection, insert

from imex.db import utcnow
from imex.db.models import transaction_attachments
from imex.store import BlobStore

TYPES = {
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "text/plain": (".txt", ".text", ".log"),
}
_HTML = re.compile(rb"^\s*(<!doctype|<html|<script|<head|<body|<svg|<\?xml|<iframe)", re.IGNORECASE)


class AttachmentRefused(ValueError):
    """The file is not accepted; the message says why and what to send instead."""


class AttachmentTooLarge(AttachmentRefused):
    """The file is over `exchange.max_attachment_bytes`."""


def too_large(limit: int) -> AttachmentTooLarge:
    return AttachmentTooLarge(f"the file is larger than {limit} bytes; attachments may be at most {limit} bytes")


@dataclass(frozen=True)
class Checked:
    filename: str
    content_type: str
    data: bytes
    scan_state: str


def sniff(data: bytes) -> str | None:
    """The type the bytes really are, among those accepted; None for anything else."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if b"\x00" in data or _HTML.match(data[:1024]):
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "text/plain"


def safe_name(filename: str) -> str:
    """The base name without path parts or characters that could break a header."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>:|?*;')
    return name.strip(" .")[:200] or "attachment"


def check(filename: str, data: bytes, *, max_bytes: int, scan_command: str = "", scan_timeout: float = 60.0) -> Checked:
    """The file as it will be kept, or AttachmentRefused saying why not."""
    name = safe_name(filename)
    if not data:
        raise AttachmentRefused("the file is empty")
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    kind = sniff(data)
    if kind is None:
        raise AttachmentRefused(
            f"{name} is not a PDF, PNG, JPEG or plain-text file (its content says otherwise); send one of those"
        )
    ext = ("." + name.rsplit(".", 1)[1].lower()) if "." in name else ""
    if ext not in TYPES[kind]:
        raise AttachmentRefused(
            f"{name}: its content is {kind} but its name ends in {ext or 'nothing'}; name it {TYPES[kind][0]}"
        )
    return Checked(name, kind, data, scan(data, scan_command, scan_timeout))


def scan(data: bytes, command: str, timeout: float) -> str:
    """Run the scanning command with the file on its input: "clean", "unscanned" when none is set."""
    if not command.strip():
        return "unscanned"
    try:
        done = subprocess.run(shlex.split(command), input=data, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AttachmentRefused(
            f"the virus scanner could not check the file ({type(exc).__name__}); it was not accepted, try again later"
        ) from None
    if done.returncode != 0:
        said = (done.stdout or done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        reason = said[0][:200] if said else f"exit status {done.returncode}"
        raise AttachmentRefused(f"the virus scanner refused the file: {reason}")
    return "clean"


def store(
    conn: Connection,
    blobs: BlobStore,
    transaction_id: int,
    checked: Checked,
    *,
    user_id: int | None,
    username: str,
    message_id: int | None = None,
) -> int:
    """Keep the bytes in the blob store and record the attachment; returns its id."""
    key, size = blobs.put_bytes(checked.data)
    return int(
        conn.execute(
            insert(transaction_attachments)
            .values(
                transaction_id=transaction_id,
                message_id=message_id,
                filename=checked.filename,
                content_type=checked.content_type,
                size=size,
                sha256=hashlib.sha256(checked.data).hexdigest(),
                blob_key=key,
                uploaded_by_user_id=user_id,
                uploaded_by=username[:200],
                scan_state=checked.scan_state,
                at=utcnow(),
            )
            .returning(transaction_attachments.c.id)
        ).scalar_one()
    )
