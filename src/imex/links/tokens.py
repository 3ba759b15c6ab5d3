"""Secrets of links: the URL token, the link-session cookie and the one-time codes. Only their SHA-256
hashes are stored, so a copy of the database opens nothing."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32  # 256 bits of randomness in every link URL and session cookie
CODE_DIGITS = 6


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def looks_like_token(text: str) -> bool:
    """A cheap check before any look-up: tokens are URL-safe base64 of a fixed length."""
    return 20 <= len(text) <= 64 and all(c.isalnum() or c in "-_" for c in text)


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_digest(link_id: int, code: str) -> str:
    """A code's hash, bound to its link so one link's code is no use on another."""
    return hashlib.sha256(f"{link_id}:{code}".encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
