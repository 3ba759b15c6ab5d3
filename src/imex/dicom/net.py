"""TCP_NODELAY for the places that still use pynetdicom's own associations (`imex node echo`, the demo
PACS): with Nagle's algorithm on, each DIMSE exchange stalls 40-50 ms waiting for a delayed ACK.
pynetdicom 3 has no option for it. The hub's listener and sender have their own upper layer (acceptor.py,
upper_layer.py), which sets it on every socket.

`install()` is idempotent and is called before any association is made.
"""
from __future__ import annotations

import socket

from pynetdicom.transport import AssociationServer, AssociationSocket


def _nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


_installed = False


def install() -> None:
    """Patch pynetdicom's transport once per process so its sockets skip Nagle's algorithm."""
    global _installed
    if _installed:
        return
    _installed = True

    original_create_socket = AssociationSocket._create_socket

    def _create_socket(self: AssociationSocket, address):  # type: ignore[no-untyped-def]
        sock = original_create_socket(self, address)
        _nodelay(sock)
        return sock

    original_get_request = AssociationServer.get_request

    def get_request(self: AssociationServer):  # type: ignore[no-untyped-def]
        client, address = original_get_request(self)
        _nodelay(client)
        return client, address

    AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]
    AssociationServer.get_request = get_request  # type: ignore[method-assign]
