"""Helpers for the HL7 tests: the sample messages, a hub with RIS endpoints, and a RIS stand-in that
records what it receives (an MLLP listener of the test's own)."""

from __future__ import annotations

import threading
from pathlib import Path

from imex.hl7.build import ack
from imex.hl7.mllp import MllpListener
from imex.hl7.parse import read_header

DATA = Path(__file__).parent.parent / "data" / "hl7"


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def variant(name: str, control: str, status: str | None = None, text: str | None = None) -> bytes:
    """A sample with another control ID (MSH-10), OBR-25 status and/or report text."""
    segments = sample(name).decode().strip("\r").split("\r")
    out = []
    for seg in segments:
        fields = seg.split("|")
        if fields[0] == "MSH":
            fields[9] = control
        elif fields[0] == "OBR" and status is not None:
            fields += [""] * (26 - len(fields))
            fields[25] = status
        elif fields[0] == "OBX" and status is not None and len(fields) > 11:
            fields[11] = status
        if fields[0] == "OBX" and text is not None:
            fields[5] = text
        out.append("|".join(fields))
    return ("\r".join(out) + "\r").encode()


class RecordingRis:
    """A destination RIS: accepts every message with AA and keeps it."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        self.listener = MllpListener(self._handle, "127.0.0.1", 0)

    def _handle(self, data: bytes, peer: str) -> bytes:
        with self.lock:
            self.messages.append(data)
        return ack(read_header(data), "AA")

    def start(self) -> RecordingRis:
        self.listener.start()
        return self

    @property
    def port(self) -> int:
        return self.listener.port

    def stop(self) -> None:
        self.listener.stop()


def register_ris(hub, *, dest_ris_port: int = 0, query_template: str = "") -> None:  # type: ignore[no-untyped-def]
    """King's RIS (RJZ) sends from 127.0.0.1 as facility RJZ; Imperial's (RYJ) receives on dest_ris_port."""
    from imex.reports.endpoints import add_ris

    add_ris(
        hub.db,
        "KINGS_RIS",
        "RJZ",
        host="127.0.0.1",
        port=dest_ris_port if query_template else 0,
        facilities=["RJZ"],
        peer_host="127.0.0.1",
        query_template=query_template,
    )
    if dest_ris_port and not query_template:
        add_ris(
            hub.db,
            "IMPERIAL_RIS",
            "RYJ",
            host="127.0.0.1",
            port=dest_ris_port,
            facilities=["RYJ"],
            peer_host="127.0.0.1",
            receiving_application="RADIS",
        )
