"""Uvicorn settings for the portal, API and DICOMweb: HTTPS with the BCP 195 profile when http.tls is on,
which reverse proxies are trusted for X-Forwarded-* headers, and connection limits and timeouts."""
from __future__ import annotations

import uvicorn

from imex.config import Config
from imex.tls.files import ServerContext, TlsFiles


def uvicorn_config(app, config: Config) -> uvicorn.Config:  # type: ignore[no-untyped-def]
    proxies = [p.strip() for p in config["http.trusted_proxies"].split(",") if p.strip()]
    result = uvicorn.Config(
        app, host=config["http.host"], port=config["http.port"], log_level="warning", access_log=False,
        proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None,
        timeout_keep_alive=config["http.keepalive_timeout"], limit_concurrency=config["http.max_connections"] or None,
        server_header=False)
    if config["http.tls"]:
        files = TlsFiles.of(config)
        context = ServerContext(files.cert, files.key)  # raises at start-up when the files are missing
        result.load()
        result.ssl = context.get()  # uvicorn's own context would allow TLS 1.0 and its default ciphers
    return result
