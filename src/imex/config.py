"""Settings: declared once here, read from one TOML file and overridden by IMEX_* environment variables.

Every setting has a default and help text, so `imex config docs` can write docs/configuration.md and a
test can fail when a setting is undocumented. Structured data a person configures (institutions, nodes,
routing rules, SMTP) lives in the same TOML file; see README.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One scalar setting: `section.name`, its type, default and what it is for."""

    key: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "IMEX_" + self.key.replace(".", "_").upper()

    @property
    def kind(self) -> type:
        return type(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        "imex-data",
        "Folder for the embedded database and the blob store, relative to the working directory unless absolute.",
    ),
    Setting("log_level", "INFO", "Python logging level: DEBUG, INFO, WARNING or ERROR."),
    Setting(
        "database.url",
        "",
        "SQLAlchemy URL. Empty: SQLite (WAL) at DATA_DIR/imex.db. PostgreSQL: postgresql+psycopg://user@host/db.",
    ),
    Setting("store.path", "", "Blob store folder. Empty: DATA_DIR/blobs."),
    Setting(
        "store.min_free_bytes",
        268435456,
        "Arriving instances are refused (DICOM status A700) while the "
        "blob store's disk has less free space than this, in bytes, so the disk never fills up. 0: no check.",
    ),
    Setting(
        "store.fsync",
        True,
        "fsync each blob and its folder before answering the sender, so a power "
        "cut cannot lose an acknowledged instance. Off only on storage that is already safe.",
    ),
    Setting(
        "dicom.ae_title",
        "IMEX",
        "The hub's own AE title. Studies sent to it are routed by header "
        "code or rule; other called AE titles may be destination aliases.",
    ),
    Setting("dicom.host", "0.0.0.0", "Address the DICOM listener binds to."),
    Setting("dicom.port", 11112, "DICOM listener port (C-ECHO, C-STORE)."),
    Setting(
        "dicom.max_pdu",
        262144,
        "Largest PDU the hub accepts, in bytes (0 means no limit). Larger PDUs mean fewer round trips per instance.",
    ),
    Setting("dicom.max_associations", 32, "Most simultaneous inbound associations."),
    Setting(
        "dicom.acse_timeout",
        10.0,
        "Seconds from accepting a connection to its complete association "
        "request (A-ASSOCIATE-RQ, after the TLS handshake on the TLS port); a caller that takes longer, "
        "however it trickles its bytes, is disconnected.",
    ),
    Setting("dicom.dimse_timeout", 120.0, "Seconds to wait for a DIMSE message (e.g. a C-STORE response)."),
    Setting("dicom.network_timeout", 120.0, "Seconds an idle association is kept open."),
    Setting(
        "dicom.check_peer_address",
        True,
        "Refuse a known calling AE title that connects from an address other than its node's host.",
    ),
    Setting("http.host", "0.0.0.0", "Address the HTTP listener (health, metrics) binds to."),
    Setting(
        "http.port", 8080, "HTTP port of the portal, the JSON API, /healthz and /metrics. 0 disables the HTTP listener."
    ),
    Setting(
        "http.max_body_bytes",
        1048576,
        "Largest request body the portal and API accept, in bytes; larger requests get 413.",
    ),
    Setting(
        "http.max_upload_bytes",
        2147483648,
        "Largest STOW-RS request (instances stored over /dicomweb/studies), in bytes; larger ones get 413.",
    ),
    Setting("http.session_idle_minutes", 30, "A portal session ends after this many minutes without a request."),
    Setting("http.session_max_hours", 12, "A portal session ends this many hours after sign-in, active or not."),
    Setting("http.token_days", 90, "Default lifetime of API tokens (bearer tokens for scripts), in days."),
    Setting("http.worklist_refresh_seconds", 5, "How often open worklist pages refresh themselves."),
    Setting(
        "auth.secret_key",
        "",
        "Key that encrypts second-factor secrets at rest (never logged). Empty: "
        "a random key kept in DATA_DIR/secret.key, made on first start. Every process sharing a "
        "database needs the same key.",
    ),
    Setting("auth.max_failed_logins", 5, "Failed sign-ins (password or second factor) in a row that lock an account."),
    Setting("auth.lockout_minutes", 15, "How long a locked account stays locked (an admin reset unlocks it)."),
    Setting("auth.password_min_length", 12, "Shortest password accepted."),
    Setting("routing.stable_seconds", 10.0, "A study is routed when no instance has arrived for this long."),
    Setting("routing.scan_interval", 0.5, "Seconds between scans for stable studies."),
    Setting(
        "routing.code_attribute",
        "RequestingService",
        "Header attribute (keyword or gggg,eeee) in which "
        "a sending system writes the destination ODS code(s). Empty disables routing by code.",
    ),
    Setting("delivery.workers", 4, "Delivery threads per `imex serve` process."),
    Setting(
        "delivery.per_destination",
        2,
        "Most transfers sent to one destination node at once (a node's own max_associations overrides it).",
    ),
    Setting("delivery.retry_initial_seconds", 10.0, "Delay before the first retry of a failed attempt."),
    Setting("delivery.retry_multiplier", 2.0, "Each further retry waits this many times longer."),
    Setting("delivery.retry_max_seconds", 900.0, "Longest delay between retries."),
    Setting("delivery.max_attempts", 8, "Attempts before a transfer stays `failed` until someone retries it."),
    Setting(
        "delivery.lease_seconds",
        30.0,
        "A claimed transfer whose worker has not renewed its lease for "
        "this long (its process died) is taken back into the queue.",
    ),
    Setting("delivery.poll_interval", 0.25, "Seconds an idle delivery worker waits before looking again."),
    Setting(
        "retention.hours",
        168,
        "Hours a study is kept after it was last received or delivered (per "
        "institution: its retention_hours). 0 keeps studies until an operator deletes them.",
    ),
    Setting(
        "retention.quarantine_hours",
        720,
        "Hours a quarantined study is kept after it last received an "
        "instance, waiting for someone to route it. 0 keeps it until an operator acts.",
    ),
    Setting("retention.extend_hours", 72, "Hours a permitted user adds, once, to a study about to expire."),
    Setting("retention.warn_hours", 24, "A study expiring within this many hours is flagged on worklists."),
    Setting("retention.scan_interval", 60.0, "Seconds between retention passes."),
    Setting("retention.batch", 50, "Most studies one retention pass deletes (the next pass takes the rest)."),
    Setting("smtp.host", "", "SMTP server for e-mail alerts. Empty disables e-mail."),
    Setting("smtp.port", 25, "SMTP server port (25, or 587 with STARTTLS)."),
    Setting("smtp.username", "", "SMTP user name, if the server needs one."),
    Setting("smtp.password", "", "SMTP password (never logged)."),
    Setting("smtp.starttls", False, "Upgrade the SMTP connection with STARTTLS before sending."),
    Setting("smtp.sender", "imex@localhost", "From address of alerts."),
    Setting("smtp.timeout", 15.0, "Seconds to wait for the SMTP server."),
    Setting("smtp.retry_initial_seconds", 30.0, "Delay before an alert that could not be sent is tried again."),
    Setting("smtp.retry_multiplier", 2.0, "Each further attempt to send an alert waits this many times longer."),
    Setting(
        "smtp.retry_max_seconds", 300.0, "Longest delay between attempts to send an alert (they give up after a day)."
    ),
    Setting("send.calling_aet", "IMEXSEND", "Calling AE title `imex send` uses; register it as a node."),
    Setting("send.hub", "127.0.0.1", "Host `imex send` pushes to."),
    # -- header harmonisation ([[harmonise]] rules are in the TOML file; see README)
    Setting(
        "harmonisation.secret_key",
        "",
        "Secret that keys pseudonyms and new UIDs of harmonised and "
        "de-identified studies (never logged). Empty: a random key kept in DATA_DIR/pseudonym.key, made "
        "on first use. Every process sharing a database needs the same key, or a patient gets two "
        "pseudonyms.",
    ),
    # -- HL7 reports ([[ris]] endpoints are in the TOML file; see README)
    Setting("hl7.host", "0.0.0.0", "Address the HL7 MLLP listener binds to."),
    Setting("hl7.port", 2575, "HL7 MLLP listener port for reports from RIS endpoints. 0 disables it."),
    Setting(
        "hl7.max_message_bytes",
        4194304,
        "Largest HL7 message accepted, in bytes between the MLLP start "
        "and end blocks; a larger one is answered AR and its connection closed.",
    ),
    Setting("hl7.tls_cert", "", "PEM certificate for MLLP over TLS. Empty: plain TCP."),
    Setting("hl7.tls_key", "", "PEM private key of hl7.tls_cert."),
    Setting("hl7.idle_timeout", 300.0, "Seconds an MLLP connection may stay silent before it is closed."),
    Setting(
        "hl7.message_timeout",
        60.0,
        "Seconds from the first byte of an MLLP message to its end block (and "
        "for the TLS handshake of a new connection); a sender that takes longer, however it trickles its "
        "bytes, is disconnected.",
    ),
    Setting(
        "hl7.max_connections",
        64,
        "Most MLLP connections open at once; one more is closed at once. Only "
        "addresses of registered RIS endpoints (peer_host of [[ris]]) may connect at all. 0: no cap.",
    ),
    Setting(
        "hl7.max_connections_per_address",
        8,
        "Most MLLP connections open at once from one IP address; one "
        "more from it is closed at once. 0: only hl7.max_connections applies.",
    ),
    Setting("hl7.send_timeout", 30.0, "Seconds to wait for a RIS's ACK when forwarding or querying."),
    Setting("hl7.retry_initial_seconds", 10.0, "Delay before a report delivery that failed is tried again."),
    Setting("hl7.retry_multiplier", 2.0, "Each further attempt to deliver a report waits this many times longer."),
    Setting("hl7.retry_max_seconds", 900.0, "Longest delay between attempts to deliver a report."),
    Setting("hl7.max_attempts", 10, "Attempts before a report delivery stays `failed`."),
    Setting(
        "hl7.retrieve_after_seconds",
        600.0,
        "A routed study without a report after this long is asked "
        "for at its source RIS, when that RIS has a query_template.",
    ),
    Setting("hl7.retrieve_interval_seconds", 900.0, "Delay between report queries for the same study."),
    Setting("hl7.retrieve_max_attempts", 8, "Report queries per study before the hub stops asking."),
    Setting(
        "hl7.retrieve_multiplier",
        1.0,
        "Each further report query for a study waits this many times "
        "longer than the one before (1: every hl7.retrieve_interval_seconds).",
    ),
    Setting("hl7.retrieve_max_interval_seconds", 86400.0, "Longest delay between report queries for a study."),
    Setting(
        "hl7.report_form",
        "sr",
        "DICOM form of reports sent to destination PACS: sr (Enhanced SR with the text), or none.",
    ),
    # -- secure transport and limits (`imex tls` manages the deployment's CA; see docs/security.md)
    Setting(
        "tls.ca_dir",
        "",
        "Folder of the deployment's certificate authority (`imex tls init`). Empty: "
        "DATA_DIR/tls. Holds the CA key: readable by the imex user only.",
    ),
    Setting(
        "tls.cert",
        "",
        "PEM certificate the hub presents on its TLS listeners and to TLS destinations. "
        "Empty: the hub certificate `imex tls init` made (TLS_CA_DIR/issued/hub.crt).",
    ),
    Setting("tls.key", "", "PEM private key of tls.cert (never logged). Empty: TLS_CA_DIR/issued/hub.key."),
    Setting(
        "tls.ca_file",
        "",
        "PEM CA certificate(s) trusted for node certificates (inbound) and "
        "destination certificates (outbound). Empty: the deployment CA (TLS_CA_DIR/ca.crt).",
    ),
    Setting(
        "tls.crl_file",
        "",
        "PEM certificate revocation list checked on every TLS handshake from a node. "
        "Empty: TLS_CA_DIR/crl.pem, which `imex tls revoke` rewrites and the hub renews.",
    ),
    Setting(
        "tls.expiry_warning_days",
        30,
        "Admins are alerted when a certificate the hub uses or issued expires within this many days.",
    ),
    Setting(
        "dicom.tls_port",
        0,
        "DICOM over TLS listener port (2762 is usual). Nodes must present a "
        "certificate issued to them by the CA; a node with tls = true may only use this port. 0 disables it.",
    ),
    Setting(
        "dicom.max_negotiating",
        64,
        "Most connections at once still negotiating (accepted, association "
        "request not yet complete), per DICOM port. They are served by one thread and never count against "
        "dicom.max_associations; when all places are taken, the connection waiting longest is dropped.",
    ),
    Setting(
        "dicom.max_negotiating_per_address",
        16,
        "Most of those connections from one IP address; one more "
        "from it drops its longest-waiting one. 0: only dicom.max_negotiating applies.",
    ),
    Setting(
        "dicom.find_limit",
        1000,
        "Most matches one C-FIND from a node may return; a query matching more is refused "
        "(0xA700, 'narrow the query') rather than answered in part.",
    ),
    Setting(
        "dicom.move_wait_seconds",
        600.0,
        "How long a C-MOVE to a node waits for its transfer to be delivered before it answers with what "
        "is still outstanding (the transfer goes on by itself).",
    ),
    Setting(
        "dicom.max_associations_per_node",
        0,
        "Most simultaneous inbound associations from one node (a "
        "node's own max_associations overrides it). 0: only dicom.max_associations applies.",
    ),
    Setting(
        "http.tls",
        False,
        "Serve the portal, API and DICOMweb over HTTPS with tls.cert/tls.key (HSTS is "
        "then sent). Behind a TLS-terminating reverse proxy leave it off and see http.trusted_proxies.",
    ),
    Setting(
        "http.client_certificates",
        "off",
        "Certificate sign-in (smart cards): off, or optional: the HTTPS port (http.tls) asks every "
        "client for a certificate from http.client_ca_file, checked against http.client_crl_file during the "
        "handshake; one mapped to a user signs them in at /login/certificate, and connections without one "
        "still sign in with a password. A revoked, expired or unknown-CA certificate fails the handshake.",
    ),
    Setting(
        "http.client_ca_file",
        "",
        "CA certificate(s) (PEM) that issue users' client certificates. Empty: tls.ca_file (the "
        "deployment CA, `imex tls issue NAME --email ...`); set it to a smart-card PKI's issuing CA bundle.",
    ),
    Setting(
        "http.client_crl_file",
        "",
        "Revocation list(s) (PEM) of http.client_ca_file, read again whenever the file changes; it "
        "must exist while http.client_certificates is on, and an expired CRL refuses every certificate. "
        "Empty: tls.crl_file (kept by `imex tls revoke`).",
    ),
    Setting(
        "http.trusted_proxies",
        "",
        "Comma-separated addresses of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are believed (client address for rate limits and "
        "the audit, https for HSTS and secure cookies). Empty (the default): none, every caller is known by "
        "the address it connects from; list the proxy (e.g. 127.0.0.1 for one on the same machine).",
    ),
    Setting("http.keepalive_timeout", 5, "Seconds an idle HTTP keep-alive connection is kept open."),
    Setting(
        "http.max_connections",
        1000,
        "Most simultaneous HTTP connections that have sent a request; more "
        "are answered 503. Connections still sending their request head count apart (http.max_pending).",
    ),
    Setting(
        "http.header_timeout",
        10.0,
        "Seconds a client has to send a complete request head (request line "
        "and headers) after connecting, or after the previous response on a keep-alive connection; a "
        "slower one is disconnected, however it trickles its bytes.",
    ),
    Setting(
        "http.max_pending",
        256,
        "Most connections at once still sending their request head (or idle "
        "between keep-alive requests); when all places are taken, the one waiting longest is dropped.",
    ),
    Setting(
        "http.max_pending_per_address",
        32,
        "Most of those connections from one IP address (addresses in "
        "http.trusted_proxies excepted); one more drops its longest-waiting one. 0: only http.max_pending.",
    ),
    Setting(
        "http.max_header_bytes",
        16384,
        "Largest request head (request line and headers), in bytes; a "
        "larger one is answered 431 (400 while it is still arriving) and the connection closed.",
    ),
    Setting(
        "http.backlog",
        2048,
        "Connections the operating system queues for the HTTP listener before the "
        "hub accepts them (listen backlog; capped by net.core.somaxconn).",
    ),
    Setting(
        "http.metrics_token",
        "",
        "Bearer token /metrics requires (Authorization: Bearer TOKEN; never "
        "logged). Empty: /metrics answers only callers on the hub's own machine (loopback addresses).",
    ),
    Setting("hl7.tls", False, "MLLP over TLS with tls.cert/tls.key (or hl7.tls_cert/hl7.tls_key when set)."),
    Setting(
        "hl7.tls_verify_client",
        False,
        "Over TLS, require each RIS to present a certificate from tls.ca_file that is not revoked.",
    ),
    Setting(
        "auth.signin_failures_per_ip",
        20,
        "Failed sign-ins from one address within "
        "auth.signin_window_minutes after which that address is answered 429 until the window passes.",
    ),
    Setting("auth.signin_window_minutes", 10, "Window of auth.signin_failures_per_ip, in minutes."),
    Setting(
        "alerts.destination_down_minutes",
        15.0,
        "A destination whose deliveries have failed this long (with none succeeding since) alerts its "
        "node's and its institution's contacts by e-mail and its transfer managers in the portal, once per "
        "outage. 0 disables the alert.",
    ),
    # -- priority transfers (priority and recipient of [[rules]]; see README)
    Setting(
        "priority.escalate_after_seconds",
        600.0,
        "An emergency transfer not delivered this long after it "
        "was queued alerts the source, the destination and the hub admins, once, and shows red on "
        "worklists. 0 disables escalation.",
    ),
    # -- confirmed delivery (a node's `confirm`: none | commitment | count; see README "Confirmed delivery")
    Setting(
        "confirm.wait_seconds",
        30.0,
        "Seconds the hub keeps the Storage Commitment association open "
        "waiting for the N-EVENT-REPORT; later reports must come on a new association to the hub.",
    ),
    Setting(
        "confirm.timeout_seconds",
        3600.0,
        "Seconds after a Storage Commitment request the hub waits for the report before asking again.",
    ),
    Setting(
        "confirm.max_asks",
        3,
        "Times the hub asks a destination (N-ACTION or C-FIND) that does not answer before the transfer is `failed`.",
    ),
    Setting(
        "confirm.max_rounds",
        2,
        "Times instances a destination did not commit or hold are sent again before the transfer is `failed`.",
    ),
    Setting("confirm.scan_interval", 1.0, "Seconds between looks for confirmations to ask or to time out."),
    # -- the patient imaging locator (see README "Finding a patient's imaging across institutions")
    Setting(
        "locator.reasons",
        "direct care,MDT,second opinion,referral",
        "Comma-separated reasons a locator search may give (one is required, and audited with the search).",
    ),
    Setting(
        "locator.index_interval",
        10.0,
        "Seconds between passes that index the studies which passed through the hub into the locator.",
    ),
    Setting("locator.sweep_scan_interval", 30.0, "Seconds between looks for PACS sweeps that are due."),
    Setting(
        "locator.sweep_timeout_seconds",
        30.0,
        "Seconds a swept PACS may take to answer a C-FIND before the sweep fails and is retried later.",
    ),
    Setting(
        "locator.sweep_window_days",
        30,
        "Days of study dates one sweep query asks for (narrowed when a "
        "window holds more than locator.sweep_max_studies).",
    ),
    Setting("locator.sweep_max_studies", 1000, "Most studies one sweep query takes from a PACS."),
    Setting("locator.sweep_retry_initial_seconds", 300.0, "Delay before a failed sweep is tried again."),
    Setting("locator.sweep_retry_multiplier", 2.0, "Each further failure of a sweep waits this many times longer."),
    Setting("locator.sweep_retry_max_seconds", 21600.0, "Longest delay before a failed sweep is tried again."),
    Setting(
        "locator.sweep_claim_seconds",
        3600.0,
        "A sweep started by a process that died is started again after this many seconds.",
    ),
    Setting(
        "locator.view_retention_hours",
        4,
        "Hours a study fetched for viewing before import is kept in "
        "the hub's cache; the institution's PACS keeps its copy.",
    ),
    # -- links for recipients outside the network (see README "Links for outside recipients")
    Setting(
        "links.expiry_days",
        14,
        "Days a link to a study for an outside recipient stays usable, unless its creator chooses otherwise.",
    ),
    Setting("links.max_expiry_days", 90, "Longest expiry, in days, a user may give a link."),
    Setting("links.code_minutes", 10, "Minutes a one-time code sent to a link's e-mail address stays valid."),
    Setting(
        "links.max_wrong_codes",
        5,
        "Wrong codes entered for a link before it locks (its creator sees it locked and may make a new link).",
    ),
    Setting("links.codes_per_hour", 5, "Most one-time codes sent for one link within an hour; more are refused."),
    Setting(
        "links.session_idle_minutes",
        20,
        "Minutes a recipient's link session may stay idle before the code must be asked for again.",
    ),
    Setting(
        "links.public_url",
        "",
        "Address outside recipients reach the portal at (https://imex.example.nhs.uk), "
        "used in the link shown to its creator. Empty: the address the creator used.",
    ),
    # -- uploads from the browser (see README "Upload from the browser")
    Setting(
        "upload.staging_dir",
        "",
        "Folder where uploads wait to be reviewed and sent (one folder each). "
        "Empty: DATA_DIR/uploads. Processes sharing a database must share it.",
    ),
    Setting("upload.expiry_hours", 24, "Hours an upload that was not sent is kept; then it and its files are deleted."),
    Setting("upload.max_file_bytes", 2147483648, "Largest single file (or zip) accepted in an upload, in bytes."),
    Setting("upload.max_staged_bytes", 4294967296, "Most bytes one upload may stage, unpacked zips included."),
    Setting("upload.max_user_bytes", 8589934592, "Most bytes one user's unsent uploads may stage together."),
    Setting(
        "upload.max_institution_bytes",
        34359738368,
        "Most bytes the unsent uploads of one institution's users may stage together.",
    ),
    Setting("upload.max_files", 20000, "Most files in one upload, zip entries included."),
    Setting(
        "upload.zip_max_ratio",
        100,
        "A zip entry over 1 MiB that claims to expand more than this many times "
        "its compressed size is refused as a zip bomb (before anything is extracted).",
    ),
    Setting("upload.zip_max_depth", 32, "Most folder levels in a zip entry's name."),
    Setting("upload.scan_interval", 5.0, "Seconds between looks for uploads to store and send, or to expire."),
    # -- exchanges: transactions, attachments, retrievals (see README "Exchanges: pre-authorised transfers")
    Setting(
        "exchange.max_attachment_bytes",
        20971520,
        "Largest document attached to an exchange (PDF, PNG, JPEG or plain text), in bytes.",
    ),
    Setting(
        "exchange.scan_command",
        "",
        "Virus-scanning command each attachment is piped through on its "
        'standard input (e.g. "clamdscan --no-summary -"); a non-zero exit refuses the file. Empty: no '
        "scan, attachments are marked unscanned.",
    ),
    Setting("exchange.scan_timeout_seconds", 60.0, "Seconds the scanning command may take before the file is refused."),
    Setting(
        "exchange.retrieve_workers", 2, "Retrieval threads (C-MOVE from institutions' PACS) per `imex serve` process."
    ),
    Setting("exchange.retrieve_max_attempts", 5, "Attempts before a retrieval stays `failed`."),
    Setting("exchange.retrieve_retry_seconds", 10.0, "Delay before the first retry of a failed retrieval."),
    Setting(
        "exchange.retrieve_retry_multiplier", 2.0, "Each further retry of a retrieval waits this many times longer."
    ),
    Setting("exchange.retrieve_retry_max_seconds", 900.0, "Longest delay between attempts of a retrieval."),
    Setting("exchange.retrieve_timeout_seconds", 600.0, "Seconds a C-MOVE may take before the attempt fails."),
    Setting(
        "exchange.retrieve_lease_seconds",
        30.0,
        "A claimed retrieval whose worker has not renewed its lease "
        "for this long (its process died) is taken back and tried again.",
    ),
    Setting("exchange.search_timeout_seconds", 30.0, "Seconds a PACS search (C-FIND) from the portal may take."),
    # -- image requests (see README "Requesting images from another hospital")
    Setting(
        "requests.expiry_days",
        7,
        "Days an image request stays open or accepted before it expires unless "
        "fulfilled (the requester is told and may ask again).",
    ),
    Setting(
        "requests.scan_interval",
        5.0,
        "Seconds between looks for image requests to expire or to mark "
        "fulfilled (their studies delivered to the requesting institution).",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}


class ConfigError(ValueError):
    """The configuration file or an environment variable is wrong; the message says what to fix."""


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    kind = setting.kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: {setting.key} must be true or false, not {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {setting.key} must be a {kind.__name__}, not {value!r}") from None


@dataclass
class Config:
    """Resolved settings plus the structured sections (institutions, nodes, rules) of the TOML file."""

    values: dict[str, Any]
    institutions: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    harmonise: list[dict[str, Any]] = field(default_factory=list)
    ris: list[dict[str, Any]] = field(default_factory=list)
    # single sign-on: OpenID Connect providers ([[oidc]]) and SCIM directories ([[scim]]); see README
    oidc: list[dict[str, Any]] = field(default_factory=list)
    scim: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def with_values(self, **overrides: Any) -> Config:
        """A copy with some settings changed; keys use `__` for the dot (dicom__port)."""
        values = dict(self.values)
        for name, value in overrides.items():
            key = name.replace("__", ".")
            if key not in _BY_KEY:
                raise ConfigError(f"unknown setting {key}")
            values[key] = _coerce(_BY_KEY[key], value, "override")
        return Config(
            values,
            list(self.institutions),
            list(self.nodes),
            list(self.rules),
            self.path,
            list(self.harmonise),
            list(self.ris),
            list(self.oidc),
            list(self.scim),
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data_dir"]).expanduser().absolute()

    @property
    def database_url(self) -> str:
        return self.values["database.url"] or f"sqlite:///{self.data_dir / 'imex.db'}"

    @property
    def store_path(self) -> Path:
        raw = self.values["store.path"]
        return Path(raw).expanduser().absolute() if raw else self.data_dir / "blobs"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


STRUCTURED = ("institutions", "nodes", "rules", "harmonise", "ris", "oidc", "scim")


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read settings: defaults, then the TOML file, then IMEX_* variables (highest)."""
    env = dict(os.environ if env is None else env)
    if path is None:
        path = env.get("IMEX_CONFIG") or ("imex.toml" if Path("imex.toml").exists() else None)
    data: dict[str, Any] = {}
    file_path: Path | None = None
    if path is not None:
        file_path = Path(path).expanduser().absolute()
        try:
            data = tomllib.loads(file_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {file_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from None
    structured = {name: data.pop(name, []) for name in STRUCTURED}
    for name, value in structured.items():
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{file_path}: [[{name}]] must be a list of tables")
    values = {s.key: s.default for s in SETTINGS}
    for key, value in _flatten(data).items():
        if key not in _BY_KEY:
            raise ConfigError(f"{file_path}: unknown setting {key!r} (see docs/configuration.md)")
        values[key] = _coerce(_BY_KEY[key], value, str(file_path))
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.key] = _coerce(setting, env[setting.env], setting.env)
    if file_path is not None and not Path(values["data_dir"]).is_absolute() and "data_dir" in data:
        values["data_dir"] = str(file_path.parent / values["data_dir"])
    return Config(
        values,
        structured["institutions"],
        structured["nodes"],
        structured["rules"],
        file_path,
        structured["harmonise"],
        structured["ris"],
        structured["oidc"],
        structured["scim"],
    )


def settings_markdown() -> str:
    """The settings reference (docs/configuration.md), generated so it cannot drift from the code."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `imex config docs`; do not edit by hand. Each setting can be set in `imex.toml` "
        "(under its section, e.g. `[dicom]` `port = 104`) or by its environment variable, which wins.",
        "",
        "| setting | environment | default | what it is for |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = str(s.default).lower() if isinstance(s.default, bool) else repr(s.default)
        lines.append(f"| `{s.key}` | `{s.env}` | `{default}` | {s.help} |")
    lines.append("")
    return "\n".join(lines)


SECRET_SETTINGS = ("database.url", "smtp.password", "auth.secret_key", "harmonisation.secret_key", "http.metrics_token")


def display_value(key: str, value: Any) -> Any:
    """A setting's value fit to print or log: secrets hidden, a database URL without its password."""
    if not value or key not in SECRET_SETTINGS:
        return value
    if key == "database.url":
        from sqlalchemy.engine import make_url

        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:  # not a URL SQLAlchemy can read: show nothing of it
            return "***"
    return "***"
