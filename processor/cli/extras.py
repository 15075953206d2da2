"""Which optional extra a missing module belongs to, so a command run on a lighter install says, in one line, what
to install instead of ending in a traceback.

The base install (``pip install .``) is what a service needs to be instrumented; every command but ``--help`` and
``--version`` needs the processor extra, ``demo`` the demo extra, ``mcp`` the mcp extra (see pyproject.toml).
TokenTrail is on no package index, so the advice installs from a checkout.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXTRA_MODULES", "install_advice", "missing_extra_message", "needed_extra"]

# Extra -> the top-level import names of its dependencies (pyproject.toml's optional-dependencies).
EXTRA_MODULES: Final[dict[str, frozenset[str]]] = {
    "processor": frozenset({"duckdb", "pyarrow", "grpc", "genai_prices", "google.protobuf", "opentelemetry.proto"}),
    "demo": frozenset({"openai", "anthropic", "httpx2"}),
    "mcp": frozenset({"mcp"}),
}


# Commands that need more than the extra of the module found missing: installing that one alone would only move
# the error to the next missing module. (The demo extra includes the processor one.)
_COMMAND_EXTRAS: Final[dict[str, str]] = {"demo": "demo", "mcp": "processor,mcp"}


def needed_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """What to install for ``command`` (``processor``, ``demo``, ``processor,mcp``) when ``exc`` is a module of one
    of our extras; None when it is none of ours (then the error is a bug and must not be disguised as advice)."""
    name = exc.name or ""
    for extra, modules in EXTRA_MODULES.items():
        if any(name == module or name.startswith(module + ".") for module in modules):
            return _COMMAND_EXTRAS.get(command.split()[0], extra)
    return None


def install_advice(extra: str) -> str:
    """``pip install './[processor]'``: from a checkout, as TokenTrail is on no package index."""
    return f"pip install './[{extra}]'"


def missing_extra_message(command: str, exc: ModuleNotFoundError) -> str | None:
    """``tokentrail report: needs the processor extra (duckdb is not installed); from a TokenTrail checkout: pip
    install './[processor]'``, or None when the missing module is not one an extra provides."""
    extra = needed_extra(command, exc)
    if extra is None:
        return None
    what = f"the {extra} extra" if "," not in extra else f"the {extra.replace(',', ' and ')} extras"
    return (
        f"tokentrail {command}: needs {what} ({exc.name} is not installed); "
        f"from a TokenTrail checkout: {install_advice(extra)}"
    )
