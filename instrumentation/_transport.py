"""The wrapt patches on the HTTP transports of ``httpx2`` and ``httpx``.

The transport is the one place every request of these clients passes, whatever SDK built it, and the place where
the response body is still a raw byte stream we can wrap. Each hook isolates its own work from the host call:
anything of ours that fails is logged at debug level and the request proceeds as if we were not there; the
host call's own exceptions propagate untouched.

Google's ``google-genai`` sends through ``httpx2`` (or ``httpx``) too, sync and async, with one exception: when
``aiohttp`` is installed its async client (``client.aio``) uses ``aiohttp`` instead, which these hooks do not see.
``patch`` says so once, as a warning, when both are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import wrapt
from opentelemetry import context
from opentelemetry.instrumentation.utils import unwrap

from . import _call, _state, _streams

log = logging.getLogger(__name__)

HTTP_MODULES: Final = ("httpx2", "httpx")


@dataclass(frozen=True, slots=True)
class _Library:
    """One HTTP library's module and the wrappers of its byte streams."""

    module: ModuleType
    wrappers: _streams.Wrappers


def _failed(call: _call.Call, error: BaseException) -> None:
    try:
        call.failed(error)
    except Exception:
        log.debug("TokenTrail could not record a failed request", exc_info=True)


def _sending(request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The transport method's arguments with ``request`` in place of the application's."""
    if args:
        return (request, *args[1:]), kwargs
    return args, {**kwargs, "request": request}


def _unobserved(call: _call.Call, response: Any) -> Any:
    log.debug("TokenTrail could not observe a response", exc_info=True)
    try:
        call.end("failed")
    except Exception:  # noqa: BLE001 - the response goes to the application whatever happened to our span
        log.debug("TokenTrail could not end a call it could not observe", exc_info=True)
    return response


# The sync and async hooks stay line for line the same apart from their awaits.


def _sync_hook(library: _Library) -> Callable[..., Any]:
    wrappers = library.wrappers

    def handle_request(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        settings = _state.current()
        request = args[0] if args else kwargs.get("request")
        call = None
        if settings is not None and request is not None:
            try:
                call = _call.begin(request, settings)
            except Exception:
                log.debug("TokenTrail could not start tracing a request", exc_info=True)
        if call is None:
            return wrapped(*args, **kwargs)
        token = call.token  # begin() made the call's context current
        if call.request is not request:
            args, kwargs = _sending(call.request, args, kwargs)
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as error:
            _failed(call, error)
            raise
        finally:
            if token is not None:
                try:
                    context.detach(token)
                except Exception:
                    log.debug("TokenTrail could not restore the context", exc_info=True)
        try:
            return call.responded(response, wrappers)
        except Exception:  # noqa: BLE001 - the response goes to the application: _unobserved logs ours
            return _unobserved(call, response)

    return handle_request


def _async_hook(library: _Library) -> Callable[..., Any]:
    wrappers = library.wrappers

    async def handle_async_request(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        settings = _state.current()
        request = args[0] if args else kwargs.get("request")
        call = None
        if settings is not None and request is not None:
            try:
                call = _call.begin(request, settings)
            except Exception:
                log.debug("TokenTrail could not start tracing a request", exc_info=True)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = call.token  # begin() made the call's context current
        if call.request is not request:
            args, kwargs = _sending(call.request, args, kwargs)
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as error:
            _failed(call, error)
            raise
        finally:
            if token is not None:
                try:
                    context.detach(token)
                except Exception:
                    log.debug("TokenTrail could not restore the context", exc_info=True)
        try:
            return call.responded(response, wrappers)
        except Exception:  # noqa: BLE001 - the response goes to the application: _unobserved logs ours
            return _unobserved(call, response)

    return handle_async_request


_patched: list[_Library] = []


def _load(name: str) -> _Library | None:
    try:
        module = importlib.import_module(name)
        return _Library(module, _streams.wrappers(module.SyncByteStream, module.AsyncByteStream))
    except Exception:  # noqa: BLE001 - a library missing, or not of the shape we wrap, is left uninstrumented
        log.debug("TokenTrail cannot instrument %s", name, exc_info=True)
        return None


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is not one, a broken install
        return False


def _warn_untraced_clients() -> None:
    """Name the LLM calls these hooks cannot see, rather than leave them silently unrecorded."""
    if _installed("aiohttp") and _installed("google.genai"):
        log.warning(
            "TokenTrail: aiohttp is installed, so google-genai's async client (client.aio) sends through aiohttp, "
            "which TokenTrail does not trace; its sync calls are traced. To trace the async ones, give the client an "
            "httpx transport: genai.Client(http_options=types.HttpOptions(async_client_args={'transport': "
            "httpx2.AsyncHTTPTransport()}))"
        )


def patch() -> None:
    """Wrap the transports of every installed library among ``HTTP_MODULES``. Idempotent."""
    if _patched:
        return
    _warn_untraced_clients()
    for name in HTTP_MODULES:
        library = _load(name)
        if library is None:
            log.debug("TokenTrail: %s is not installed; its requests are not instrumented", name)
            continue
        try:
            wrapt.wrap_function_wrapper(library.module, "HTTPTransport.handle_request", _sync_hook(library))
            wrapt.wrap_function_wrapper(
                library.module, "AsyncHTTPTransport.handle_async_request", _async_hook(library)
            )
            _patched.append(library)
        except Exception:
            log.warning("TokenTrail could not instrument %s", name, exc_info=True)


def unpatch() -> None:
    """Remove the wraps ``patch`` installed."""
    while _patched:
        library = _patched.pop()
        for cls_name, method in (("HTTPTransport", "handle_request"), ("AsyncHTTPTransport", "handle_async_request")):
            try:
                unwrap(getattr(library.module, cls_name), method)
            except Exception:
                log.debug("TokenTrail could not unwrap %s.%s", cls_name, method, exc_info=True)
