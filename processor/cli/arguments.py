"""Argument types shared by the ``tokentrail`` subcommands, so every command reads a date the same way."""

from __future__ import annotations

import argparse
from datetime import date


def day_arg(text: str) -> date:
    """A UTC day as YYYY-MM-DD; argparse turns the error into a usage message (exit 2)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None
