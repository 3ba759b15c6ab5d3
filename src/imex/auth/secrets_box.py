"""Encryption at rest for the secrets imex keeps in its database (TOTP keys), with a key from
configuration (`auth.secret_key`) or, when that is empty, a key file made once in the data folder."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from the configured secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an empty secret key cannot protect anything")
        key = base64.urlsafe_b64encode(hashlib.sha256(b"imex-secret-box\x00" + secret.encode()).digest())
        self._fernet = Fernet(key)

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a stored secret cannot be decrypted: auth.secret_key was changed or the "
                "key file replaced; reset the user's second factor"
            ) from None


def load_secret(configured: str, data_dir: Path) -> str:
    """The configured secret, or the one in DATA_DIR/secret.key, created (mode 0600) on first use."""
    if configured:
        return configured
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret.encode())
    finally:
        os.close(fd)
    return secret
