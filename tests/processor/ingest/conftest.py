"""Every ingest test ends with no `tokentrail serve` subprocess of its own left running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.receiver import stop_serve_processes


@pytest.fixture(autouse=True)
def _no_receiver_left_behind() -> Iterator[None]:
    yield
    stop_serve_processes()
