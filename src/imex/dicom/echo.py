"""C-ECHO from the hub to a node: the "test connection" of `imex node echo` and the portal's node screen.
The answer says what is wrong in terms a PACS manager can act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str


def echo(hub_aet: str, name: str, ae_title: str, host: str, port: int, timeout: float = 10.0) -> EchoResult:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import uid_to_sop_class

    from imex.dicom import net
    from imex.dicom.upper_layer import reject_reason

    net.install()
    ae = AE(ae_title=hub_aet)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = timeout
    ae.add_requested_context(uid_to_sop_class("1.2.840.10008.1.1"))  # Verification SOP Class
    where = f"{name} ({ae_title}@{host}:{port})"
    connected: list[bool] = []
    try:
        assoc = ae.associate(
            host, port, ae_title=ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))]
        )
    except (OSError, ValueError) as exc:  # the host name does not resolve, or is not a valid name at all
        return EchoResult(False, f"{where}: cannot reach {host}: {exc}. Check the node's host.")
    if not assoc.is_established:
        if not connected:
            return EchoResult(
                False,
                f"{where}: cannot connect: nothing accepted a connection at {host}:{port}. "
                "Is it running, and are the host and port right?",
            )
        rj = assoc.acceptor.primitive  # a received A-ASSOCIATE-RJ always carries its source and reason
        if assoc.is_rejected and rj is not None and rj.result_source is not None and rj.diagnostic is not None:
            return EchoResult(
                False,
                f"{where} rejected the association "
                f"({reject_reason(rj.result_source, rj.diagnostic)}): it must know the hub "
                f"as AE title {hub_aet} at this machine's address",
            )
        if assoc.is_aborted:
            return EchoResult(False, f"{where} aborted the association request")
        return EchoResult(False, f"{where} did not answer the association request")
    status = assoc.send_c_echo()
    assoc.release()
    if not status or "Status" not in status or status.Status != 0:
        answer = f"status 0x{int(status.Status):04X}" if status and "Status" in status else "no answer"
        return EchoResult(False, f"{where} answered C-ECHO with {answer}")
    return EchoResult(True, f"{where} answered C-ECHO: success")
