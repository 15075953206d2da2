"""The instrumentation's own fixtures, on top of tests/conftest.py."""

from __future__ import annotations

import pytest
from tokentrail.instrumentation import semconv


@pytest.fixture
def clean_env(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """As tests/conftest.py's, and no TOKENTRAIL_UNKNOWN_KEYS from the developer's shell either."""
    clean_env.delenv(semconv.ENV_UNKNOWN_KEYS, raising=False)
    return clean_env
