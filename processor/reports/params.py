"""Reading request parameters (HTTP query strings, MCP tool arguments, CLI options) the one way every report does.

A parameter is one string, or a list as ``parse_qs`` gives. Empty values count as absent, so clients that always
send every parameter still get the defaults; a parameter given twice is refused rather than guessed at, and so is a
parameter no one reads (``user=`` for ``user_id=`` would otherwise answer for everyone): ``refuse_unknown``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, TypeAlias

from tokentrail.processor.reports.errors import ReportParameterError

__all__ = [
    "AS_OF_FIRST",
    "AS_OF_LAST",
    "Params",
    "as_date",
    "date_param",
    "int_param",
    "list_param",
    "parse_as_of",
    "refuse_unknown",
    "single_param",
]

Params: TypeAlias = Mapping[str, str | Sequence[str] | None]

_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _values(params: Params, name: str) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, Sequence) and all(isinstance(v, str) for v in raw):
        return list(raw)
    raise ReportParameterError(f"{name} must be a string, got {raw!r}")


def refuse_unknown(params: Mapping[str, object], known: Sequence[str], what: str = "parameter") -> None:
    """Refuse names outside ``known``: a misspelt filter that is ignored answers a different question (everyone's
    cost for one customer's), so the error names it and suggests the closest known name."""
    unknown = [name for name in params if name not in known]
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known {what}s: {', '.join(known)}"
        problems.append(f"unknown {what} {name!r}; {hint}")
    raise ReportParameterError("; ".join(problems))


def single_param(params: Params, name: str) -> str | None:
    """One value of ``name`` (stripped; empty counts as absent); 400 if given more than once."""
    values = [v.strip() for v in _values(params, name)]
    values = [v for v in values if v]
    if len(values) > 1:
        raise ReportParameterError(f"{name} was given {len(values)} times; give it once")
    return values[0] if values else None


def list_param(params: Params, name: str) -> list[str]:
    """Comma-separated and/or repeated: ``tags=a,b`` and ``tags=a&tags=b`` mean the same."""
    out: list[str] = []
    for value in _values(params, name):
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def date_param(params: Params, name: str, default: date | None = None) -> date:
    """A ``YYYY-MM-DD`` parameter; ``default`` when absent, else required."""
    value = single_param(params, name)
    if value is None:
        if default is not None:
            return default
        raise ReportParameterError(f"{name} is required (YYYY-MM-DD, inclusive, UTC)")
    if not _DATE_RE.fullmatch(value):
        raise ReportParameterError(f"{name} must be a date as YYYY-MM-DD (UTC), got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportParameterError(f"{name} is not a valid date: {value!r}") from None


def as_date(value: date | str, name: str) -> date:
    """A ``date``, or a ``YYYY-MM-DD`` string read as ``date_param`` reads it."""
    if isinstance(value, str):
        return date_param({name: value}, name)
    return value


def int_param(params: Params, name: str, default: int, low: int, high: int) -> int:
    """A whole-number parameter within ``low..high``."""
    value = single_param(params, name)
    if value is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,9}", value) or not low <= int(value) <= high:
        raise ReportParameterError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(value)


AS_OF_FIRST: Final = datetime(1970, 1, 2, tzinfo=UTC)
AS_OF_LAST: Final = datetime(9000, 1, 1, tzinfo=UTC)
"""The ``as_of`` range: a report looks back (budget periods, spike baselines) and forward (the period's end) from
it, and Python's dates end at year 1 and 9999; no usage is older than 1970 nor will be this far ahead."""


def parse_as_of(text: str | None, name: str = "as_of") -> datetime:
    """``YYYY-MM-DD`` (the end of that UTC day) or an ISO datetime (UTC if no offset), from 1970-01-02 to
    9000-01-01; now when absent."""
    if text is None:
        return datetime.now(UTC)
    moment: datetime | None
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text) + timedelta(days=1), time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except ValueError:
        raise ReportParameterError(f"{name} must be a date (YYYY-MM-DD) or an ISO date-time, got {text!r}") from None
    except OverflowError:  # 9999-12-31 (its end is past the last datetime), 0001-01-01T00:00+01:00 (before the first)
        moment = None
    if moment is None or not AS_OF_FIRST <= moment <= AS_OF_LAST:
        raise ReportParameterError(
            f"{name} must be from {AS_OF_FIRST.date()} to {AS_OF_LAST.date()} (UTC), got {text!r}"
        )
    return moment
