"""A progress line on stderr for the long jobs (``reprice``, ``compact``), drawn only when stderr is a terminal: a
pipe or a log file gets nothing extra, and stdout (the results) is the same either way. No dependency: one line,
redrawn with a carriage return, cleared before anything else is printed and at the end."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, command: str, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr  # looked up now: whatever stderr is at run time
        self._command = command
        self._total = total
        self._width = 0
        self.enabled = total > 0 and self._stream.isatty()

    def show(self, done: int, what: str) -> None:
        """``tokentrail reprice: repricing 2026-11-03 (3/30 days)``, over the previous line."""
        if not self.enabled:
            return
        text = f"tokentrail {self._command}: {what} ({done + 1}/{self._total} days)"
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        """Erases the line, so the next output (a result on stdout, an error, the prompt) starts clean."""
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
