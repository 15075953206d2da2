"""Who a call was for and what it was about: the user id and the tags of a record, within the limits reports rely on.

The limits are Vercel AI Gateway's (at most 10 tags of 1-64 characters, a user id of at most 256), so attribution
written for one reads the same in the other. Values beyond them are truncated or dropped with a note; the record is
always kept. Control characters are removed, with a note (labels the reader decodes arrive without them: only
metadata and inherited attribution meet them here). Dialects that carry attribution as free-form metadata (``<prefix><name>`` attributes or one JSON
object) are read with ``from_metadata``: a ``user_id``-like name is the user, ``tags`` adds tags, ``credential``
states the credential type, a session-like name (``sessionId``, ``thread_id``, ``conversation``) is the conversation,
and any other scalar becomes a ``name:value`` tag (a session id as a tag would make one tag per conversation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from tokentrail.processor.normalize.values import Notes, text, text_list, without_controls

__all__ = [
    "MAX_CONVERSATION_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "MAX_USER_CHARS",
    "Metadata",
    "conversation_of",
    "from_metadata",
    "limit_tags",
    "tags_of",
    "user_of",
]

MAX_TAGS: Final = 10
MAX_TAG_CHARS: Final = 64
MAX_USER_CHARS: Final = 256
MAX_CONVERSATION_CHARS: Final = 256

# Metadata names that mean "the user" (compared lower-cased, ``-`` as ``_``).
USER_NAMES: Final = frozenset({"user", "userid", "user_id", "user.id", "enduser.id", "enduserid"})
# Metadata names that give the credential type (``byok`` or ``system``), for instrumentations whose spans can carry
# attribution only as metadata (the Vercel AI SDK's, OpenLLMetry's association properties, OpenInference's).
CREDENTIAL_NAMES: Final = frozenset({"credential", "credentialtype", "credential_type", "tokentrail.credential.type"})
# Metadata names that mean "the conversation": Langfuse's ``sessionId`` (its Vercel AI SDK and OpenLLMetry guides),
# OpenAI's and LangGraph's threads, the OTel GenAI attribute written as metadata.
CONVERSATION_NAMES: Final = frozenset(
    {
        "session", "sessionid", "session_id", "session.id", "conversation", "conversationid", "conversation_id",
        "gen_ai.conversation.id", "thread", "threadid", "thread_id",
    }
)

# A tags attribute's value -> its tags, for values that needed no note: the same list arrives span after span.
_TAG_LISTS: dict[tuple[object, ...], tuple[str, ...]] = {}
_TAG_LISTS_MAX: Final = 4096  # values come from spans: bounded


def user_of(value: object, notes: Notes) -> str | None:
    """The user id: text without control characters (removed with a note), stripped, at most MAX_USER_CHARS
    (truncated with a note)."""
    return _id_text(value, "user id", MAX_USER_CHARS, notes)


def conversation_of(value: object, notes: Notes) -> str | None:
    """The conversation id, held to the user id's rules (at most MAX_CONVERSATION_CHARS)."""
    return _id_text(value, "conversation id", MAX_CONVERSATION_CHARS, notes)


def _id_text(value: object, what: str, limit: int, notes: Notes) -> str | None:
    found = text(value)
    if found is None:
        return None
    cleaned = without_controls(found)
    if cleaned is not None:
        notes.append(f"control characters removed from the {what}")
        found = cleaned
    found = found.strip() or None
    if found is not None and len(found) > limit:
        notes.append(f"{what} truncated from {len(found)} to {limit} characters")
        found = found[:limit]
    return found


def tags_of(values: Iterable[object], notes: Notes) -> list[str]:
    """The tags of every tags attribute's value, merged and limited."""
    values = list(values)
    if len(values) == 1:
        value = values[0]
        if isinstance(value, tuple):
            try:
                cached = _TAG_LISTS.get(value)
            except TypeError:  # an array holding a kvlist (a dict): unhashable, never remembered
                cached = None
            if cached is not None:
                return list(cached)
            if all(type(v) is str for v in value):
                own: Notes = []
                limited = limit_tags(list(value), own) if value else []
                if own:
                    notes.extend(own)
                elif len(_TAG_LISTS) < _TAG_LISTS_MAX:
                    _TAG_LISTS[value] = tuple(limited)
                return limited
    tags: list[str] = []
    for value in values:
        tags.extend(text_list(value))
    return limit_tags(tags, notes) if tags else tags


def limit_tags(tags: list[str], notes: Notes) -> list[str]:
    """At most MAX_TAGS distinct tags of 1-MAX_TAG_CHARS characters without control characters, first ones kept."""
    out: list[str] = []
    seen: set[str] = set()
    truncated = controls = 0
    for tag in tags:
        cleaned = without_controls(tag)
        if cleaned is not None:
            tag = cleaned
            controls += 1
        tag = tag.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_CHARS:
            tag = tag[:MAX_TAG_CHARS]
            truncated += 1
        if tag in seen:
            continue
        if len(out) == MAX_TAGS:
            notes.append(f"{len(tags)} tags: only the first {MAX_TAGS} distinct ones kept")
            break
        seen.add(tag)
        out.append(tag)
    if truncated:
        notes.append(f"{truncated} tag(s) truncated to {MAX_TAG_CHARS} characters")
    if controls:
        notes.append(f"control characters removed from {controls} tag(s)")
    return out


class Metadata(NamedTuple):
    """What free-form metadata says about a call (raw values: the reader cleans them)."""

    user: str | None
    tags: list[str]
    credential: str | None
    conversation: str | None


def from_metadata(
    items: Iterable[tuple[str, object]], user: str | None, tags: list[str], conversation: str | None = None
) -> Metadata:
    """``user``, ``tags`` and ``conversation`` completed from metadata items (name, value), and the credential type
    they state: the first user-like name is the user when none was set, the first session-like name the
    conversation when none was set, a credential name (``credential``, ``credentialType``) states the credential
    type, ``tags`` (a list or comma-separated text) adds tags, any other scalar adds a ``name:value`` tag."""
    credential: str | None = None
    for item_name, value in items:
        normalized = item_name.strip().lower().replace("-", "_")
        if normalized in USER_NAMES:
            if user is None and isinstance(value, (str, int)) and not isinstance(value, bool):
                user = str(value)
        elif normalized in CONVERSATION_NAMES:
            if conversation is None and isinstance(value, (str, int)) and not isinstance(value, bool):
                conversation = str(value)
        elif normalized in CREDENTIAL_NAMES:
            if credential is None and isinstance(value, str):
                credential = value
        elif normalized == "tags":
            if isinstance(value, str):
                tags.extend(t for t in value.split(",") if t.strip())
            elif isinstance(value, (list, tuple)):
                tags.extend(v for v in value if isinstance(v, str))
        elif isinstance(value, (str, int, float, bool)):
            tags.append(f"{item_name}:{value}")
    return Metadata(user, tags, credential, conversation)
