"""The fault suite's fixtures: its size (``sizes``: CI or soak), a seeded random source whose seed a failure prints
(``TOKENTRAIL_FAULT_SEED=N`` replays a run's random kill points), and no child process of a test left running
after it."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from tests.fault.serve import kill_all
from tests.fault.sizes import SIZE, Size


@pytest.fixture
def size() -> Size:
    return SIZE


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    seed = int(os.environ.get("TOKENTRAIL_FAULT_SEED") or random.randrange(1 << 32))
    request.node.user_properties.append(("seed", seed))
    print(f"TOKENTRAIL_FAULT_SEED={seed}")  # shown with a failure's captured output
    return random.Random(seed)


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    kill_all()
