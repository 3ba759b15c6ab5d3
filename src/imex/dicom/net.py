"""TCP_NODELAY for the places that still use pynetdicom's own associations (`imex node echo`, the demo
PACS): with Nagle's algorithm on, each DIMSE exchange stalls 40-50 ms waiting for a delayed ACK.
pynetdicom 3 has no option for it. The hub's listener and sender have their own upper layer (acceptor.py,
upper_layer.py), which sets it on every socket.

`install()` is idempotent and is called before any association is made.

`printable()` escapes what a peer sent (AE titles, UIDs, messages) for a log line, everywhere on the
DICOM path, so no value from the wire can start a line of its own or carry terminal control codes.
pynetdicom's PDU classes, which decode for the hub's own upper layer too, log rejected values as they
came ("Invalid 'Calling AE Title' value ..."): `escape_pynetdicom_logs()` makes its records printable.
"""

from __future__ import annotations

import logging
import socket

import pynetdicom
from pynetdicom.transport import AssociationServer, AssociationSocket

from imex.logsafe import printable


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

    def _create_socket(self: AssociationSocket, address):
        sock = original_create_socket(self, address)
        _nodelay(sock)
        return sock

    original_get_request = AssociationServer.get_request

    def get_request(self: AssociationServer):
        client, address = original_get_request(self)
        _nodelay(client)
        return client, address

    AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]
    AssociationServer.get_request = get_request  # type: ignore[method-assign]


class _Printable(logging.Filter):
    """Rewrites a record's message with `printable` (multi-line debug dumps become one escaped line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = printable(message, 20_000)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


_escaping = _Printable()


def escape_pynetdicom_logs() -> None:
    """Put the escaping filter on every pynetdicom (and pydicom) logger: each module logs under its own
    name, and a filter applies only where a record is made. Idempotent; done when this module is imported."""
    names = [name for name in logging.Logger.manager.loggerDict if name.split(".")[0] in ("pynetdicom", "pydicom")]
    for name in names:
        logger = logging.getLogger(name)
        if _escaping not in logger.filters:
            logger.addFilter(_escaping)


assert pynetdicom  # imported so that its modules' loggers exist
escape_pynetdicom_logs()
