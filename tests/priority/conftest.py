"""Fixtures of the priority tests: pynetdicom destinations that record arrival order."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from slowpeer import RecordingSCP  # noqa: E402


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
