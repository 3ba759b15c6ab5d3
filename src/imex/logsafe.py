"""Values a peer sent, made safe to log: every listener (DICOM, HL7, HTTP) logs wire values through
`printable`, so that a newline or control character in an AE title, a UID or a facility name cannot forge
a log line or hide text from whoever reads the log."""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object, limit: int = 200) -> str:
    """`value` made safe for one log line: a peer controls AE titles, UIDs and messages, and a newline or
    control character in them could forge log lines or hide text from the reader. Control and other
    non-printable characters become escapes (\\n, \\x1b, \\u2028), backslashes are doubled so that an
    escape cannot be faked, and long values are cut to `limit` characters with what was left off said."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not (text.isprintable() and "\\" not in text):
        text = "".join(
            c
            if c.isprintable() and c != "\\"
            else _ESCAPES.get(c)
            or (
                f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
            )
            for c in text
        )
    return text + f"...({cut} more)" if cut > 0 else text
