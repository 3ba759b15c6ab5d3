"""Hostile clients of the MLLP port: an address that is no registered RIS is closed at connect, open
connections are capped overall and per address, a message trickled byte by byte is cut off at its
deadline, and hl7.max_message_bytes is exact. After each, the listener still answers a valid message and
nothing of the hostile input is stored. Clients use other loopback addresses (127.0.0.2, 127.0.0.3) as
their source to be other peers."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from hl7tools import register_ris, variant
from hubtools import register_hospitals, wait_until
from imex.db.models import reports
from imex.hl7.mllp import END, frame
from imex.reports.endpoints import add_ris

MAX = 20_000
OTHER_RIS = "127.0.0.2"  # a second registered RIS
STRANGER = "127.0.0.3"  # nobody registered this address


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(
        make_config(
            hl7__max_message_bytes=MAX,
            hl7__message_timeout=2.0,
            hl7__idle_timeout=300.0,
            hl7__max_connections=3,
            hl7__max_connections_per_address=2,
        )
    )
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)  # King's RIS: facility RJZ from 127.0.0.1
    add_ris(hub.db, "KINGS_RIS_2", "RJZ", facilities=["RJZ2"], peer_host=OTHER_RIS)
    return hub


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """One framed answer, or b"" when the hub closes the connection first."""
    data = b""
    while END not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        if not chunk:
            return b""
        data += chunk
    return data


def _send(port: int, message: bytes, source: str = "127.0.0.1") -> bytes:
    with _connect(port, source) as sock:
        try:
            sock.sendall(frame(message))
        except (ConnectionResetError, BrokenPipeError):
            return b""
        return _answer(sock)


def _closed_by_hub(sock: socket.socket, within: float = 10.0) -> bool:
    """Whether the hub closes the connection (EOF or reset) without our sending anything."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _message(control: str, facility: str = "RJZ", text: str | None = None) -> bytes:
    return variant("oru_v23_final.hl7", control, text=text).replace(b"|CRIS|RJZ|", f"|CRIS|{facility}|".encode())


def _controls(hub) -> set[str]:  # type: ignore[no-untyped-def]
    with hub.db.engine.connect() as conn:
        return set(conn.execute(sql_select(reports.c.control_id)).scalars())


def _count(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.db.engine.connect() as conn:
        return conn.execute(sql_select(func.count()).select_from(reports)).scalar_one()


_serial = iter(range(1, 10_000))


def _still_serves(hub, source: str = "127.0.0.1", facility: str = "RJZ") -> None:  # type: ignore[no-untyped-def]
    control = f"OK{next(_serial)}"
    answer = _send(hub.reports.port, _message(control, facility), source)
    assert f"MSA|AA|{control}".encode() in answer, answer
    assert control in _controls(hub)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.WARNING, logger="imex.hl7.mllp")
    yield caplog


def test_an_unknown_address_is_closed_at_connect(hub, warnings):
    port = hub.reports.port
    _still_serves(hub)
    with _connect(port, STRANGER) as sock:
        assert _closed_by_hub(sock), "a connection from an unregistered address was kept open"
    # a whole valid message from there gets no answer and is not stored
    before = _count(hub)
    assert _send(port, _message("STRANGER1"), STRANGER) == b""
    assert _count(hub) == before and "STRANGER1" not in _controls(hub)
    assert any(
        "127.0.0.3" in r.getMessage() and "not the address of a registered RIS" in r.getMessage()
        for r in warnings.records
    )
    _still_serves(hub)
    _still_serves(hub, OTHER_RIS, "RJZ2")


def test_open_connections_are_capped_per_address_and_overall(hub, warnings):
    port = hub.reports.port
    held: list[socket.socket] = []
    try:
        for n in range(2):  # two from King's RIS, each answered and kept open
            sock = _connect(port)
            sock.sendall(frame(_message(f"HELD{n}")))
            assert b"MSA|AA|" in _answer(sock)
            held.append(sock)
        with _connect(port) as third:  # a third from the same address: closed at once
            assert _closed_by_hub(third)
        assert _send(port, _message("THIRD")) == b""
        # another RIS may still connect: the overall cap (3) is not reached
        sock = _connect(port, OTHER_RIS)
        sock.sendall(frame(_message("OTHER0", "RJZ2")))
        assert b"MSA|AA|" in _answer(sock)
        held.append(sock)
        with _connect(port, OTHER_RIS) as fourth:  # now it is
            assert _closed_by_hub(fourth)
        assert _send(port, _message("FOURTH", "RJZ2"), OTHER_RIS) == b""
        assert not {"THIRD", "FOURTH"} & _controls(hub)
        assert any("hl7.max_connections_per_address" in r.getMessage() for r in warnings.records)
        assert any("most hl7.max_connections allows" in r.getMessage() for r in warnings.records)
    finally:
        for sock in held:
            sock.close()
    # the places are given back when the connections close
    wait_until(lambda: hub.reports.listener.open == 0, timeout=15, message="held connections closed")
    _still_serves(hub)
    _still_serves(hub, OTHER_RIS, "RJZ2")


def test_a_trickled_message_is_cut_off_at_its_deadline(hub, warnings):
    """hl7.message_timeout is 2 s and hl7.idle_timeout 300 s: a byte every 0.2 s keeps the connection busy
    but the message must still end within its deadline."""
    port = hub.reports.port
    message = frame(_message("SLOW1"))
    with _connect(port) as sock:
        sock.sendall(message[:40])
        closed = False
        stop = time.monotonic() + 30
        position = 40
        while time.monotonic() < stop and position < len(message) - 2:
            try:
                sock.sendall(message[position : position + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            position += 1
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                try:
                    closed = sock.recv(65536) == b""
                except ConnectionResetError:
                    closed = True
                if closed:
                    break
        assert closed, "a message trickled byte by byte was never cut off"
    assert "SLOW1" not in _controls(hub)
    assert any("hl7.message_timeout" in r.getMessage() for r in warnings.records)
    _still_serves(hub)


def test_max_message_bytes_is_exact(hub):
    port = hub.reports.port
    base = len(_message("SIZE", text=""))

    def sized(control: str, size: int) -> bytes:
        data = _message(control, text="A" * (size - base - len(control) + len("SIZE")))
        assert len(data) == size
        return data

    for control, size in (("OVER1", MAX + 1), ("OVER100K", MAX + 100_000)):
        answer = _send(port, sized(control, size))
        assert f"MSA|AR|{control}".encode() in answer and b"exceeds the limit of 20000 bytes" in answer, answer
        assert control not in _controls(hub)
        _still_serves(hub)
    answer = _send(port, sized("EXACT", MAX))
    assert b"MSA|AA|EXACT" in answer, answer
    assert "EXACT" in _controls(hub)
    _still_serves(hub)
