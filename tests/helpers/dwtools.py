"""DICOMweb test helpers: the portal's users and signed-in clients, a hub where King's (RJZ) sent a study
to Imperial (RYJ) and Barts (RRV) has no part in it, and a dicomweb-client session with a bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from dicomweb_client.api import DICOMwebClient

from portaltools import PASSWORD, add_user, base_url, bearer, browser  # noqa: F401

BIG_BODY = 64 * 1024 * 1024


def token(hub: Any, username: str, password: str = PASSWORD) -> str:
    answer = httpx.post(f"{base_url(hub)}/api/v1/auth/token", json={"username": username, "password": password})
    assert answer.status_code == 201, answer.text
    return answer.json()["token"]


def client(hub: Any, username: str) -> DICOMwebClient:
    """dicomweb-client (not ours) against the hub's /dicomweb, signed in with the user's bearer token."""
    return DICOMwebClient(f"{base_url(hub)}/dicomweb", headers={"Authorization": f"Bearer {token(hub, username)}"})


def exchange(hub: Any, storescp_port: int, files: list[Path]) -> None:
    """Register the hospitals, push `files` from King's to Imperial and wait for delivery; users at each."""
    import peers
    from hubtools import register_hospitals, transfer_states, wait_until
    from imex.directory import add_institution

    register_hospitals(hub, dest_port=storescp_port)
    add_institution(hub.db, "RRV", "Barts Health")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * len(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", len(files), len(files))], message="delivery")
    for name, ods, roles in (
        ("kings_sender", "RJZ", ["sender"]),
        ("imperial_viewer", "RYJ", ["viewer"]),
        ("barts_viewer", "RRV", ["viewer"]),
        ("barts_sender", "RRV", ["sender"]),
        ("kings_auditor", "RJZ", ["auditor"]),
    ):
        add_user(hub, name, ods, roles)


def dataset_bytes(data: bytes) -> bytes:
    from imex.dicom.part10 import dataset_offset

    return data[dataset_offset(data) :]
