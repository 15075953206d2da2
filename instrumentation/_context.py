"""Who and what an LLM call is for: the attribution carried in the OpenTelemetry context.

Attribution lives in two places at once. The context value is exact and cheap to read inside one process; the
W3C baggage entries (``semconv.BAGGAGE_*``) are what a propagator copies into outgoing requests, so that tags set
at the edge of a request reach the service that finally calls the LLM. Inside a process the context value wins;
a process that only received baggage rebuilds the attribution from it.

Values come from application code and, through baggage, from other services: they are validated with the same
limits as Vercel's Custom Reporting (at most 10 tags of 1-64 characters, a user of at most 256 characters). What
does not fit is dropped and counted, never raised, because attribution must not be able to fail an LLM call.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar, cast
from urllib.parse import unquote

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context

from . import semconv

log = logging.getLogger(__name__)

MAX_TAGS: Final = 10
MAX_TAG_LENGTH: Final = 64
MAX_USER_LENGTH: Final = 256

_CONTEXT_KEY: Final = context.create_key("tokentrail-attribution")


def call_context(ctx: Context) -> tuple[Attribution, Mapping[str, object], trace.Span]:
    """What ``ctx`` says about an LLM call about to be made: the attribution in effect (``current_attribution``),
    its baggage entries (``baggage.get_all``) and its current span (``trace.get_current_span``)."""
    entries = baggage.get_all(ctx)
    span = trace.get_current_span(ctx)
    attribution = ctx.get(_CONTEXT_KEY)
    if not isinstance(attribution, Attribution):
        attribution = current_attribution(ctx, entries) if entries else EMPTY
    return attribution, entries, span


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Attribution:
    """A validated attribution. ``dropped`` counts the values that were refused on the way here."""

    user: str | None = None
    tags: tuple[str, ...] = ()
    credential: str | None = None
    dropped: int = 0
    conversation: str | None = None  # gen_ai.conversation.id: the chat session, thread or agent run

    def merged(
        self, user: object = None, tags: object = None, credential: object = None, conversation: object = None
    ) -> Attribution:
        """This attribution with ``user``, ``credential`` and ``conversation`` replaced when given and ``tags`` added
        to its own.

        Inner scopes refine outer ones: a user or credential set closer to the call is the more specific one, while
        tags accumulate (the edge says ``customer:acme``, the feature code adds ``feature:search``).
        """
        new_user, user_dropped = clean_user(user)
        new_credential, credential_dropped = clean_credential(credential)
        new_tags, tags_dropped = clean_tags(tags, self.tags)
        new_conversation, conversation_dropped = clean_user(conversation)  # the same rules as a user id
        return Attribution(
            user=new_user if new_user is not None else self.user,
            tags=new_tags,
            credential=new_credential if new_credential is not None else self.credential,
            dropped=self.dropped + user_dropped + credential_dropped + tags_dropped + conversation_dropped,
            conversation=new_conversation if new_conversation is not None else self.conversation,
        )

    def with_fallback(self, user: object = None, tags: object = None) -> Attribution:
        """This attribution completed by what a request says about itself, which never overrides explicit code.

        Used for the request body's ``user`` and the reporting headers: the application's own ``attribute()``
        is the more deliberate statement, so it wins; tags from both places are kept.
        """
        if self.user is not None:
            user = None
        if user is None and tags is None:
            return self  # the common case: the request says nothing about itself
        return self.merged(user=user, tags=tags)


EMPTY: Final = Attribution()


def clean_user(value: object) -> tuple[str | None, int]:
    """The user id if it is valid, and how many values were dropped (0 or 1). Empty means "not given"."""
    if value is None or value == "":
        return None, 0
    if not isinstance(value, str) or len(value) > MAX_USER_LENGTH:
        return None, 1
    return value, 0


def clean_credential(value: object) -> tuple[str | None, int]:
    """The credential type if it is one of ``semconv.CREDENTIAL_TYPES``, and how many values were dropped."""
    if value is None or value == "":
        return None, 0
    if isinstance(value, str) and value.lower() in semconv.CREDENTIAL_TYPES:
        return value.lower(), 0
    return None, 1


def clean_tags(values: object, existing: tuple[str, ...] = ()) -> tuple[tuple[str, ...], int]:
    """``existing`` followed by the valid, new ``values``, within ``MAX_TAGS``, and how many were dropped.

    A lone string is taken as one tag rather than as its characters: ``tags="plan:pro"`` is an easy mistake to
    make and an impossible one to spot in a dashboard. Duplicates are not counted as dropped: they add nothing.
    """
    if values is None:
        return existing, 0
    items: Iterable[object]
    if isinstance(values, str):
        items = (values,)
    elif isinstance(values, Iterable):
        items = cast(Iterable[object], values)
    else:
        return existing, 1
    tags = list(existing)
    dropped = 0
    for tag in items:
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH:
            dropped += 1
        elif tag in tags:
            continue
        elif len(tags) >= MAX_TAGS:
            dropped += 1
        else:
            tags.append(tag)
    return tuple(tags), dropped


def current_attribution(ctx: Context | None = None, entries: Mapping[str, object] | None = None) -> Attribution:
    """The attribution in effect in ``ctx`` (default: the current context). Never raises.

    ``entries`` may pass ``baggage.get_all(ctx)`` when the caller has it already.
    """
    try:
        value = context.get_value(_CONTEXT_KEY) if ctx is None else ctx.get(_CONTEXT_KEY)
        if isinstance(value, Attribution):
            return value
        return _from_baggage(ctx, entries)
    except Exception:
        log.debug("Could not read the attribution from the context", exc_info=True)
        return EMPTY


def _from_baggage(ctx: Context | None, entries: Mapping[str, object] | None = None) -> Attribution:
    """The attribution that another service sent as baggage; validated again, since baggage is untrusted input."""
    if entries is None:
        entries = baggage.get_all(ctx)
    if not entries:
        return EMPTY
    user = entries.get(semconv.BAGGAGE_USER)
    tags = entries.get(semconv.BAGGAGE_TAGS)
    credential = entries.get(semconv.BAGGAGE_CREDENTIAL)
    conversation = entries.get(semconv.BAGGAGE_CONVERSATION)
    if user is None and tags is None and credential is None and conversation is None:
        return EMPTY
    tag_list = _decode_tags(tags) if isinstance(tags, str) else tags
    return EMPTY.merged(user=user, tags=tag_list, credential=credential, conversation=conversation)


def _encode_tags(tags: tuple[str, ...]) -> str:
    """One comma-separated baggage value for a list of tags.

    Only ``%`` and ``,`` are escaped, so a comma inside a tag survives; the propagator percent-encodes the rest
    once, and a service in another language that sets ``tokentrail.tags=a,b`` is read the same way.
    """
    return ",".join(tag.replace("%", "%25").replace(",", "%2C") for tag in tags)


def _decode_tags(value: str) -> list[str]:
    return [unquote(part) for part in value.split(",") if part]


def context_with(attribution: Attribution, ctx: Context | None = None) -> Context:
    """``ctx`` carrying ``attribution`` both as our context value and as W3C baggage."""
    ctx = context.set_value(_CONTEXT_KEY, attribution, ctx)
    if attribution.user is not None:
        ctx = baggage.set_baggage(semconv.BAGGAGE_USER, attribution.user, ctx)
    if attribution.tags:
        ctx = baggage.set_baggage(semconv.BAGGAGE_TAGS, _encode_tags(attribution.tags), ctx)
    if attribution.credential is not None:
        ctx = baggage.set_baggage(semconv.BAGGAGE_CREDENTIAL, attribution.credential, ctx)
    if attribution.conversation is not None:
        ctx = baggage.set_baggage(semconv.BAGGAGE_CONVERSATION, attribution.conversation, ctx)
    return ctx


class attribute:  # noqa: N801 - reads as a verb at the call site, like contextlib.suppress
    """Attribute the LLM calls made inside a block or function to a user, tags, a credential type and a conversation.

    Use as ``with attribute(user="u1", tags=["customer:acme"]):``, ``async with ...``, or as a decorator on a sync
    or async function. ``conversation`` (a chat session, thread or agent run id) becomes ``gen_ai.conversation.id``,
    which ``group_by=conversation`` reports by. Scopes nest: an inner user, credential or conversation replaces the
    outer one, inner tags are added to the outer ones. Invalid values are dropped and counted in ``tokentrail.attribution.dropped``; nothing here
    raises, because a typo in a tag must not take down the call it describes.

    Scopes travel as W3C baggage too, so any propagator-instrumented request carries them, including one to an
    LLM provider whose SDK propagates trace context (the Anthropic SDK does by default).
    """

    def __init__(
        self,
        user: str | None = None,
        tags: Iterable[str] | str | None = None,
        credential: str | None = None,
        conversation: str | None = None,
    ) -> None:
        self.user = user
        self.conversation = conversation
        # Materialised now, so a generator passed as ``tags`` serves every use of a decorator, not only the first.
        self.tags: tuple[object, ...] | str | None = (
            tags if tags is None or isinstance(tags, str) else _as_tuple(tags)
        )
        self.credential = credential
        self._tokens: list[Token[Context] | None] = []

    def _enter(self) -> Attribution:
        try:
            attribution = current_attribution().merged(self.user, self.tags, self.credential, self.conversation)
            self._tokens.append(context.attach(context_with(attribution)))
            return attribution
        except Exception:
            log.debug("Could not set the attribution", exc_info=True)
            self._tokens.append(None)
            return current_attribution()

    def _exit(self) -> None:
        token = self._tokens.pop() if self._tokens else None
        if token is not None:
            try:
                context.detach(token)
            except Exception:
                log.debug("Could not restore the attribution", exc_info=True)

    def __enter__(self) -> Attribution:
        return self._enter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()

    async def __aenter__(self) -> Attribution:
        return self._enter()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit()

    def _fresh(self) -> attribute:
        """A new scope with the same values, so concurrent calls of a decorated function never share a token."""
        return attribute(
            self.user, cast("Iterable[str] | str | None", self.tags), self.credential, self.conversation
        )

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):
            async_function = cast(Callable[..., Awaitable[Any]], function)

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await async_function(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return function(*args, **kwargs)

        return cast(F, wrapper)


def _as_tuple(values: object) -> tuple[object, ...]:
    try:
        return tuple(cast(Iterable[object], values))
    except TypeError:
        # Not iterable: kept as a one-element tuple so that clean_tags counts it as dropped.
        return (values,)
