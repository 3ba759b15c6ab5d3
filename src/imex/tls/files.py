"""Where the hub's TLS files are, from the settings (each empty setting falls back to the deployment CA
folder), and server contexts that follow changes to them: a revocation or a renewed certificate takes
effect on the next handshake without a restart."""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from imex.config import Config
from imex.tls import client_certs, profile


@dataclass(frozen=True)
class TlsFiles:
    ca_dir: Path
    cert: Path
    key: Path
    ca: Path
    crl: Path

    @classmethod
    def of(cls, config: Config) -> TlsFiles:
        raw = config["tls.ca_dir"]
        ca_dir = Path(raw).expanduser().absolute() if raw else config.data_dir / "tls"

        def pick(key: str, default: Path) -> Path:
            return Path(config[key]).expanduser().absolute() if config[key] else default

        return cls(
            ca_dir,
            pick("tls.cert", ca_dir / "issued" / "hub.crt"),
            pick("tls.key", ca_dir / "issued" / "hub.key"),
            pick("tls.ca_file", ca_dir / "ca.crt"),
            pick("tls.crl_file", ca_dir / "crl.pem"),
        )

    def client_context(self) -> ssl.SSLContext:
        """For the hub dialling a TLS destination: verify it against tls.ca_file, present the hub's
        certificate when it asks for one."""
        return profile.client_context(self.ca, cert=self.cert, key=self.key)

    def https_client_files(self, config: Config) -> tuple[Path, Path]:
        """(CA, CRL) that users' client certificates on the HTTPS port are checked against:
        http.client_ca_file and http.client_crl_file, or tls.ca_file and tls.crl_file when empty."""

        def pick(key: str, default: Path) -> Path:
            return Path(config[key]).expanduser().absolute() if config[key] else default

        return pick("http.client_ca_file", self.ca), pick("http.client_crl_file", self.crl)


class ServerContext:
    """A listener's SSLContext, rebuilt when its certificate, key, CA or CRL file changes."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        client_ca: Path | None = None,
        crl: Path | None = None,
        require_client: bool = False,
    ) -> None:
        self.args = (cert, key)
        self.client_ca, self.crl, self.require_client = client_ca, crl, require_client
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._context: ssl.SSLContext | None = None
        self.get()  # fail at start-up, not at the first connection, when a file is missing

    def _files_stamp(self) -> tuple:
        stamp = []
        for path in (*self.args, self.client_ca, self.crl):
            try:
                stamp.append(os.stat(path).st_mtime_ns if path else None)
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def get(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        with self._lock:
            if self._context is None or stamp != self._stamp:
                self._context = profile.server_context(
                    *self.args, client_ca=self.client_ca, crl=self.crl, require_client=self.require_client
                )
                self._stamp = stamp
            return self._context

    def switching(self) -> ssl.SSLContext:
        """A context for a server that is given one SSLContext for good (uvicorn): every handshake is
        switched to the current get() while the ClientHello is read (the SNI callback, which OpenSSL
        calls with or without a server name), so a new CRL, CA or certificate applies from the next
        connection on, without a restart."""
        front = self.get()
        current = self.get

        def switch(connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
            connection.context = current()

        front.sni_callback = switch
        self._context = None  # the front context is never handed out again, nor switched to
        self.get()
        return front


def outbound(config: Config, node_tls: bool) -> ssl.SSLContext | None:
    """The client context for an association to a node with `tls = true`, else None (plain TCP)."""
    return TlsFiles.of(config).client_context() if node_tls else None


def mllp_context(config: Config) -> ssl.SSLContext | None:
    """The MLLP listener's context: None for plain TCP; with hl7.tls_verify_client, a RIS must present a
    certificate from tls.ca_file that the CRL does not list (the CRL is read when the listener starts)."""
    if not (config["hl7.tls"] or config["hl7.tls_cert"]):
        return None
    files = TlsFiles.of(config)
    cert = Path(config["hl7.tls_cert"]) if config["hl7.tls_cert"] else files.cert
    key = Path(config["hl7.tls_key"]) if config["hl7.tls_cert"] else files.key
    verify = config["hl7.tls_verify_client"]
    return ServerContext(
        cert, key, client_ca=files.ca if verify else None, crl=files.crl if verify else None, require_client=verify
    ).get()


def https_context(config: Config) -> ServerContext:
    """The HTTPS port's context: the hub's certificate; with http.client_certificates = "optional" also
    asking for a client certificate, verified against the client CA and (during the handshake) the CRL,
    which must exist; a connection without one is still served."""
    files = TlsFiles.of(config)
    if client_certs.mode(config) == "off":
        return ServerContext(files.cert, files.key)
    ca, crl = files.https_client_files(config)
    if not crl.is_file():
        raise profile.TlsConfigError(
            f"revocation list {crl} does not exist: http.client_certificates needs the CRL of the client CA "
            "(http.client_crl_file; `imex tls crl` writes the deployment CA's)"
        )
    return ServerContext(files.cert, files.key, client_ca=ca, crl=crl, require_client=False)


def check(config: Config) -> None:
    """Load every TLS file the configured listeners need, so a missing or wrong one stops `imex serve`
    at start-up with a message naming it (TlsConfigError, a ConfigError)."""
    files = TlsFiles.of(config)
    if config["dicom.tls_port"]:
        ServerContext(files.cert, files.key, client_ca=files.ca, crl=files.crl, require_client=True)
    client_certs.mode(config)  # a wrong value, or client certificates without http.tls
    if config["http.tls"] and config["http.port"]:
        https_context(config)
    if config["hl7.port"]:
        try:
            mllp_context(config)
        except (OSError, ssl.SSLError) as exc:
            raise profile.TlsConfigError(f"MLLP over TLS: {exc}") from None
