"""The secret that keys pseudonyms and new UIDs: `harmonisation.secret_key`, or a key file made once in
the data folder. Losing it means a patient gets a new pseudonym, so it is created once and never rotated
by the hub itself."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from imex.config import Config

_lock = threading.Lock()


def load_key(config: Config) -> bytes:
    """The configured secret, or DATA_DIR/pseudonym.key, created (mode 0600) on first use."""
    configured = config["harmonisation.secret_key"]
    if configured:
        return str(configured).encode()
    path: Path = config.data_dir / "pseudonym.key"
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it meanwhile
                pass
            else:
                try:
                    os.write(fd, os.urandom(32).hex().encode())
                finally:
                    os.close(fd)
        return path.read_text().strip().encode()
