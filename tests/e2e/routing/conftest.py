"""Fixtures of the confirmed-delivery and priority tests: a pynetdicom destination that answers Storage
Commitment, and pynetdicom destinations that record arrival order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from commitpeer import CommitmentPeer
from slowpeer import RecordingSCP


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


@pytest.fixture
def recording_scp() -> Iterator[Callable[..., RecordingSCP]]:
    started: list[RecordingSCP] = []

    def start(**kwargs: object) -> RecordingSCP:
        scp = RecordingSCP(**kwargs).start()  # type: ignore[arg-type]
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()
