"""The errors a report raises on purpose. A module of its own, without DuckDB, so the CLI can name them in its
error handling without loading the query engine to print ``--help``."""

from __future__ import annotations

from tokentrail.processor.errors import TokenTrailError

__all__ = ["ReportError", "ReportParameterError"]


class ReportError(TokenTrailError):
    """Base class of every error the reports raise on purpose."""


class ReportParameterError(ReportError, ValueError):
    """A query parameter is missing or wrong; the message says which and what is accepted (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
