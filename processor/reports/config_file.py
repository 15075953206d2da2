"""What the budgets and revenue files share: reading the TOML, finding the line a table or key is on, reading money
exactly, and collecting every problem before raising one error that lists them all, each with its line (as the
pricing overrides file does). A user fixing a file sees everything wrong in one run, not one mistake per restart.

``tomllib`` gives values, not positions, so ``TomlLines`` finds them in the text: table headers (``[a.b]``,
``[[a]]`` with its index among the file's ``[[a]]``) and ``key =`` lines inside a table. A value it cannot place
(an inline table, say) points at the nearest enclosing table or key that it can.

Not shared with ``pricing.overrides``: that would load the price catalog with every ``tokentrail`` command that
reads a budgets or revenue file (the CLI keeps the catalog for the commands that need it).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokentrail.processor.reports.errors import ConfigFileError

__all__ = ["ConfigFileError", "Problems", "TomlLines", "exact_decimal", "read_toml", "unknown_key"]

# A double holds every decimal of at most 15 significant digits exactly enough to give it back: a TOML float of
# at most 15 digits is read as written. One of more digits may already have lost some: refused, to be quoted.
_FLOAT_DIGITS = 15

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_PART = re.compile(r"\s*(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+))\s*")
_NUMBER = re.compile(r"^\s*([+-]?[0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9_]+)?)\s*(?:#.*)?$")


def _key_parts(text: str) -> tuple[str, ...] | None:
    """``a."b.c".d`` -> ("a", "b.c", "d"); None if it is not a dotted key."""
    parts: list[str] = []
    position = 0
    while True:
        m = _KEY_PART.match(text, position)
        if m is None:
            return None
        parts.append(next(g for g in m.groups() if g is not None))
        position = m.end()
        if position == len(text):
            return tuple(parts)
        if text[position] != ".":
            return None
        position += 1


class TomlLines:
    """Line numbers (1-based) of tables and keys in a TOML text."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.sections: list[tuple[int, tuple[str, ...], int | None]] = [(1, (), None)]  # (line, path, array index)
        counts: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines, 1):
            m = _HEADER.match(line)
            path = _key_parts(m[2]) if m else None
            if m is None or path is None:
                continue
            index = None
            if m[1] == "[[":
                index = counts[path] = counts.get(path, -1) + 1
            self.sections.append((number, path, index))

    def _span(self, path: tuple[str, ...], index: int | None) -> tuple[int, int] | None:
        for i, (line, section, idx) in enumerate(self.sections):
            if section == path and idx == index:
                end = self.sections[i + 1][0] if i + 1 < len(self.sections) else len(self.lines) + 1
                # The first line holds the header, except for the top level, where line 1 may hold a key.
                return (line + 1 if path else line), end
        return None

    def _key_in(self, span: tuple[int, int], key: str) -> int | None:
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*[=.]")
        for number in range(*span):
            if pattern.match(self.lines[number - 1]):
                return number
        return None

    def line(self, path: tuple[str, ...] = (), index: int | None = None, key: str | None = None) -> int:
        """The line of ``key`` in table ``path`` (the ``index``-th ``[[path]]``), or of the table itself."""
        span = self._span(path, index)
        if key is not None:
            found = self._key_in(span, key) if span is not None else None
            if found is not None:
                return found
            for line, section, _ in self.sections:  # a key written as a table of its own: [path.key] or deeper
                if section[: len(path) + 1] == (*path, key):
                    return line
        if span is None:  # not a [header] of its own: an inline table, or dotted keys in the table above it
            return self.line(path[:-1], None, path[-1]) if path else 1
        return span[0] - 1 if path else 1

    def literal(self, line: int) -> str | None:
        """The number written after ``=`` on ``line``, as written (None if it is not a lone number)."""
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        _, equals, value = text.partition("=")
        m = _NUMBER.match(value) if equals else None
        return m[1].replace("_", "") if m else None


@dataclass
class Problems:
    """Every problem found in one file (``source``), with its line when the values came from text."""

    source: str | None = None
    lines: TomlLines | None = None
    found: list[tuple[int, str]] = field(default_factory=list)  # (line or 0, message)

    def line(self, path: tuple[str, ...] = (), index: int | None = None, key: str | None = None) -> int | None:
        return self.lines.line(path, index, key) if self.lines is not None else None

    def add(self, line: int | None, message: str) -> None:
        where = ":".join(str(p) for p in (self.source, line) if p is not None)
        self.found.append((line or 0, f"{where}: {message}" if where else message))

    def at(self, path: tuple[str, ...], index: int | None, key: str | None, message: str) -> None:
        self.add(self.line(path, index, key), message)

    def number(self, value: object, path: tuple[str, ...], index: int | None, key: str, what: str) -> Decimal | None:
        """``value`` as an exact Decimal, or None after adding the problem."""
        line = self.line(path, index, key)
        literal = self.lines.literal(line) if self.lines is not None and line is not None else None
        try:
            return exact_decimal(value, literal)
        except ValueError as exc:
            self.add(line, f"{what} {exc}")
            return None

    def raise_if_any(self, error: type[ConfigFileError]) -> None:
        if self.found:
            raise error([message for _, message in sorted(self.found, key=lambda found: found[0])])


def read_toml(source: str | os.PathLike[str], error: type[ConfigFileError]) -> tuple[Mapping[str, Any], Problems]:
    """The file's values, and a ``Problems`` that places them; raises ``error`` if it cannot be read or parsed."""
    path = Path(source)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"cannot read the {error.kind} file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if m is None:
            raise error(f"{path}: not valid TOML: {message}") from None
        raise error(f"{path}:{m[1]}: not valid TOML: {message[: m.start()].strip()} (column {m[2]})") from None
    return data, Problems(str(path), TomlLines(text))


def exact_decimal(value: object, literal: str | None = None) -> Decimal:
    """A number from a file, exactly as written; raises ValueError saying why not. ``literal`` is the number's text
    in the file, when known: a TOML float is then read from it, digit for digit."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be a number, got {value!r}")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"must be a finite number, got {value!r}")
        if literal is not None and _float_equals(literal, value):
            number = Decimal(literal)
        else:
            # The shortest spelling that gives the same double: 0.1 stays 0.1, never 0.1000000000000000055.
            number = Decimal(repr(value))
            if len(number.as_tuple().digits) > _FLOAT_DIGITS:
                raise ValueError(
                    f"has more digits than a TOML float keeps exactly ({value!r}): quote it to keep every digit, "
                    'e.g. "0.123456789012345678"'
                )
    else:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"must be a number, got {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _float_equals(literal: str, value: float) -> bool:
    try:
        return float(literal) == value
    except ValueError:
        return False


def unknown_key(what: str, key: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {key!r} ({hint}allowed: {', '.join(allowed)})"
