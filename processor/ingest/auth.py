"""The ingest token: both transports carry it as ``authorization: Bearer <token>`` (gRPC metadata, HTTP header)."""

from __future__ import annotations

import hmac

__all__ = ["bearer_matches"]


def bearer_matches(token: str | None, presented: str | None) -> bool:
    """True when no token is required (``token`` is None), or ``presented`` is ``Bearer <token>``. The comparison
    takes the same time wherever the values differ, so timing tells an attacker nothing about the token."""
    if token is None:
        return True
    if not presented:
        return False
    scheme, _, value = presented.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())
