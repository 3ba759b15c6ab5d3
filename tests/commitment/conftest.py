"""Fixtures of the confirmed-delivery tests: a pynetdicom destination that answers Storage Commitment."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from commitpeer import CommitmentPeer  # noqa: E402


@pytest.fixture
def commitment_peer() -> Iterator[Callable[..., CommitmentPeer]]:
    started: list[CommitmentPeer] = []

    def start(**kwargs: object) -> CommitmentPeer:
        peer = CommitmentPeer(**kwargs).start()  # type: ignore[arg-type]
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()
