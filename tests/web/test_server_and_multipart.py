"""Units of the HTTP layer that need no hub: the pending-connection cap of the HTTP listener (oldest
dropped first, per address and overall, trusted proxies excepted) and the multipart/related spooler that
writes each STOW-RS part to its own file as the body arrives."""

from __future__ import annotations

from pathlib import Path

import pytest

from imex.web.dicomweb.multipart import PartSpooler, related
from imex.web.errors import Problem
from imex.web.server import Pending


def test_pending_drops_the_longest_waiting_overall_and_per_address() -> None:
    pending = Pending(limit=4, per_address=2, exempt=frozenset({"10.0.0.1"}))
    assert pending.add("a1", "192.0.2.1") == [] and pending.add("a2", "192.0.2.1") == []
    assert pending.add("a3", "192.0.2.1") == ["a1"]  # its address had its share: its oldest goes
    assert pending.add("p1", "10.0.0.1") == [] and pending.add("p2", "10.0.0.1") == []  # the proxy: no share
    assert pending.add("p3", "10.0.0.1") == ["a2"]  # over the overall cap: the oldest of all goes
    assert list(pending.waiting) == ["a3", "p1", "p2", "p3"] and len(pending) == 4
    pending.remove("p1")
    pending.remove("p1")  # harmless twice (a dropped connection is also lost later)
    assert "p1" not in pending and pending.by_address["10.0.0.1"] == {"p2": None, "p3": None}
    for conn in ("a3", "p2", "p3"):
        pending.remove(conn)
    assert pending.by_address == {} and len(pending) == 0


def test_pending_without_caps_keeps_everyone() -> None:
    pending = Pending(limit=0, per_address=0)
    assert all(pending.add(k, "192.0.2.9") == [] for k in range(100)) and len(pending) == 100


def _spool(body: bytes, folder: Path, piece: int) -> tuple[list[tuple[dict[str, str], bytes]], PartSpooler]:
    spooler = PartSpooler("b0und", folder)
    parts = []
    for start in range(0, len(body), piece):
        for part in spooler.write(body[start : start + piece]):
            parts.append((part.headers, Path(part.path).read_bytes()))
            assert part.size == len(parts[-1][1])
            Path(part.path).unlink()
    return parts, spooler


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_parts_are_spooled_to_files_whatever_the_chunking(tmp_path: Path, piece: int) -> None:
    first, second = b"DICM" + bytes(range(256)) * 40 + b"\r\n--b0un", b"\r\n\r\nsecond\r\n"
    body = (
        b"--b0und\r\nContent-Type: application/dicom\r\nX-Note: one\r\n\r\n" + first + b"\r\n--b0und\r\n"
        b"\r\n" + second + b"\r\n--b0und--\r\nepilogue"
    )
    parts, spooler = _spool(body, tmp_path, piece)
    spooler.finish()
    spooler.close()
    assert parts == [({"content-type": "application/dicom", "x-note": "one"}, first), ({}, second)]
    assert list(tmp_path.iterdir()) == []


def test_a_body_cut_short_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    parts, spooler = _spool(b"--b0und\r\nContent-Type: application/dicom\r\n\r\nhalf a part", tmp_path, 5)
    assert parts == [] and len(list(tmp_path.glob("in-stow-*"))) == 1  # being written
    with pytest.raises(Problem) as cut:
        spooler.finish()
    assert cut.value.status == 400 and "closing boundary" in cut.value.detail
    spooler.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Problem) as bad:
        PartSpooler("b0und", tmp_path).write(b"--other\r\n\r\nx\r\n--other--\r\n")
    assert bad.value.status == 400
    empty = PartSpooler("b0und", tmp_path)
    empty.write(b"--b0und--\r\n")
    with pytest.raises(Problem, match="no parts"):
        empty.finish()


def test_content_type_is_checked() -> None:
    assert related('multipart/related; type="application/dicom"; boundary=abc') == ("application/dicom", "abc")
    for header, status in (
        ("application/dicom", 415),
        ("multipart/related; type=application/dicom", 400),
        ("multipart/related; boundary=" + "x" * 71, 400),
    ):
        with pytest.raises(Problem) as refused:
            related(header)
        assert refused.value.status == status
