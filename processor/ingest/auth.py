"""Who may talk to our HTTP ports: the bearer token (both ingest transports carry it as ``authorization: Bearer
<token>``: gRPC metadata, HTTP header) and the ``Host`` check (OTLP/HTTP and the report API).

The ``Host`` check stops DNS rebinding: a web page at ``attacker.example`` whose name the attacker re-points at
127.0.0.1 can make the victim's browser send requests to our loopback ports, but the browser still sends
``Host: attacker.example``. So a ``Host`` is answered only when it names the address the server listens on, or
one the operator allows (``--allowed-hosts``). The port in ``Host`` is not checked: it tells nothing about the
page (an SSH tunnel or a port mapping changes it legitimately).

Both HTTP ports also refuse a request whose framing two parsers could read two ways (``framing_problem``): a proxy
in front that reads it one way and h11 the other would let a second, unchecked request through (smuggling).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Final

__all__ = ["LOOPBACK_NAMES", "HostCheck", "bearer_matches", "framing_problem", "is_loopback", "parse_allowed_hosts"]

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})


def framing_problem(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request's head is ambiguous, or None. ``headers`` as ASGI gives them (names lower-case). h11 merges two
    identical ``Content-Length`` headers and reads a body with both ``Transfer-Encoding`` and ``Content-Length`` as
    chunked; a proxy in front may read the length, or route on the other ``Host``."""
    hosts = lengths = 0
    encoded = False
    for name, _ in headers:
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            lengths += 1
        elif name == b"transfer-encoding":
            encoded = True
    if hosts > 1:
        return "more than one Host header"
    if lengths > 1:
        return "more than one Content-Length header"
    if lengths and encoded:
        return "both Content-Length and Transfer-Encoding: send one"
    return None


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


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """``host`` (a bind address) is reachable from this machine only."""
    host = host.strip("[]").lower()
    address = _ip(host)
    return host == "localhost" if address is None else address.is_loopback


def parse_allowed_hosts(text: str | None) -> tuple[str, ...]:
    """``--allowed-hosts`` / ``TOKENTRAIL_ALLOWED_HOSTS``: comma-separated host names (no port; ``*`` allows any)."""
    return tuple(_name(part) for part in (text or "").split(",") if part.strip())


def _name(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def host_name(header: str) -> str | None:
    """The name part of a ``Host`` header (``[::1]:8787`` -> ``::1``), or None when it is not a host[:port]."""
    header = header.strip()
    if header.startswith("["):
        name, bracket, rest = header[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())) or _ip(name) is None:
            return None
    else:
        name, colon, port = header.partition(":")
        if colon and not port.isdigit():
            return None
    name = name.lower().rstrip(".")
    if not name or any(c.isspace() or c in "/\\@?#" for c in name):
        return None
    return name


class HostCheck:
    """Which ``Host`` names a server bound to ``bound`` answers.

    * Always: the loopback names (``localhost``, ``127.0.0.1``, ``[::1]``), the bound address itself, and every name
      in ``allowed`` (``*`` allows any).
    * Bound beyond loopback (a wildcard or an interface's address), also any IP address: a browser sends the name
      it resolved, so an IP literal cannot be a rebinding page.
    * Bound beyond loopback with a ``token`` and no ``allowed`` list, any name: the token is what guards the data
      (a rebinding page does not have it), and a name check would only refuse the deployment's own names.
    """

    def __init__(self, bound: str, allowed: Iterable[str] = (), *, token: bool = False) -> None:
        self.bound = _name(bound)
        self.allowed = frozenset(_name(a) for a in allowed if a.strip())
        self.loopback = is_loopback(bound) and self.bound not in _WILDCARDS
        self.any_name = "*" in self.allowed or (token and not self.loopback and not self.allowed)

    def permits(self, header: str | None) -> bool:
        """``header`` is the request's ``Host`` (None when absent: an HTTP/1.0 client, no browser)."""
        if header is None or self.any_name:
            return True
        name = host_name(header)
        if name is None:
            return False
        if name in LOOPBACK_NAMES or name == self.bound or name in self.allowed:
            return True
        return not self.loopback and _ip(name) is not None

    def refusal(self, header: str) -> str:
        """The one-line answer to a refused ``Host``: what is accepted and how to allow more."""
        return (
            f"Host {header[:100]!r} is not a name of this server (it answers {self._accepted()}); if it is yours, "
            "start tokentrail serve with --allowed-hosts NAME (or TOKENTRAIL_ALLOWED_HOSTS)"
        )

    def _accepted(self) -> str:
        names = sorted({*LOOPBACK_NAMES, *self.allowed} | ({self.bound} if self.bound not in _WILDCARDS else set()))
        return ", ".join(names) + ("" if self.loopback else " and IP addresses")
