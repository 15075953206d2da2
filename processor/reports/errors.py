"""The errors a report raises on purpose. A module of its own, without DuckDB, so the CLI can name them in its
error handling without loading the query engine to print ``--help``."""

from __future__ import annotations

from tokentrail.processor.errors import TokenTrailError

__all__ = ["ConfigFileError", "ReportError", "ReportParameterError"]


class ReportError(TokenTrailError):
    """Base class of every error the reports raise on purpose."""


class ReportParameterError(ReportError, ValueError):
    """A query parameter is missing or wrong; the message says which and what is accepted (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigFileError(ReportError, ValueError):
    """A file the reports read (budgets, revenue) is missing or wrong. ``errors`` lists every problem, each as
    ``FILE:LINE: problem`` when it came from a file, so one run shows the user everything to fix."""

    kind = "configuration"

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = f"{len(self.errors)} problems in the {self.kind} file:\n  " + "\n  ".join(self.errors)
        super().__init__(message)
