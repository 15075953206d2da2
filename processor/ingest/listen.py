"""Opening a listener's port with an error a person can act on.

A port already taken is the most common reason ``tokentrail serve`` fails to start (a second receiver, an OTel
Collector, a previous run not yet gone). gRPC's core reports it on stderr itself ("Failed to add port to server", an
absl line no Python logging setting silences) before ``add_insecure_port`` returns, and the HTTP server raises a bare
``[Errno 98]`` that names no port. So each transport first binds the address the way its server will
(``SO_REUSEADDR``, and ``SO_REUSEPORT`` when asked), and a refusal becomes one ``ListenError`` naming the
transport, the address and the fix.
"""

from __future__ import annotations

import errno
import socket
from typing import Final

from tokentrail.processor.errors import TokenTrailError

__all__ = ["ListenError", "check_port_free", "listen_error"]

# Which `tokentrail serve` option sets each listener's port, and what else usually holds it (named in the fix).
_OTLP_HOLDERS: Final = "another tokentrail serve, an OTel Collector?"
PORT_OPTIONS: Final = {
    "OTLP/gRPC": ("--grpc-port", _OTLP_HOLDERS),
    "OTLP/HTTP": ("--http-port", _OTLP_HOLDERS),
    "the report API": ("--api-port", "another tokentrail serve?"),
}


class ListenError(TokenTrailError, OSError):
    """A transport cannot listen on its address (in use, not permitted). An ``OSError``, as a failed bind always was;
    ``str()`` is one line that names the port and the fix."""


def listen_error(transport: str, host: str, port: int, exc: OSError) -> ListenError:
    """The ``ListenError`` for a failed bind of ``transport`` on ``host:port``."""
    address = f"{host}:{port}"
    option, holders = PORT_OPTIONS.get(transport, ("another port", "another server?"))
    if exc.errno == errno.EADDRINUSE:
        why = f"port {port} is already in use ({holders}); stop what holds it or choose another port with {option}"
    elif exc.errno == errno.EACCES:
        why = f"not permitted to listen on port {port} (ports below 1024 need privileges); choose another with {option}"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this machine; use one it has (e.g. 127.0.0.1 or 0.0.0.0) with --host"
    else:
        why = exc.strerror or str(exc)
    error = ListenError(f"cannot listen for {transport} on {address}: {why}")  # one argument: str() is the message
    error.errno = exc.errno
    return error


def check_port_free(transport: str, host: str, port: int, *, reuse_port: bool) -> None:
    """Raises ``ListenError`` when ``host:port`` cannot be bound as a server would bind it (port 0 always can).

    Only refusals a person can fix are raised (in use, not permitted, not an address here); any other failure
    (a name that does not resolve, a family the machine lacks) is left to the server's own bind, which reports it."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _, address in infos:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                    raise listen_error(transport, host, port, exc) from None
