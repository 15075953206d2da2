"""The root of every error the processor raises on purpose, so a caller can catch TokenTrail's refusals (a bad
parameter, a bad config file, a full disk) apart from bugs, which stay ordinary exceptions and are never hidden."""

from __future__ import annotations

__all__ = ["TokenTrailError"]


class TokenTrailError(Exception):
    """Something TokenTrail refused or could not do, with a message that says what and, where it can, why."""
