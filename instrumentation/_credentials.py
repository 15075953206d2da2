"""Which key paid for a call: ``system`` (the service's own) or ``byok`` (one a customer brought), and a fingerprint.

A key is the service's own unless the application says otherwise: most services hold their key in a secret manager
and pass it in code (``OpenAI(api_key=...)``), so "a key we were not told about" is no sign of a customer's key, and
reading it as BYOK (priced at $0) would report the whole bill as free. The application says otherwise with
``attribute(credential="byok")`` around the call, with the keys (or fingerprints) of its customers (``byok_keys``), with
a resolver asked with each call's fingerprint (``byok``), or by declaring every key it did not list as the service's
(``unknown_keys="byok"`` / ``TOKENTRAIL_UNKNOWN_KEYS=byok``: then the system keys are the exceptions).

The key itself never leaves this module. Reports split spend by key through ``tokentrail.credential.id``, an
HMAC-SHA256 of the key under a secret salt: stable enough to group by, useless for recovering or confirming a
key without the salt. System keys are remembered only as fingerprints, so the set of them is safe to keep.

So that a call does not pay for an HMAC, ``Fingerprinter`` remembers the fingerprint of each credential header
value it has seen. Those values hold keys: they stay in the process's memory, as the SDK clients' own copies do,
and are never logged, exported or shown by a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from . import semconv

log = logging.getLogger(__name__)

# A documented public default, so fingerprints are stable out of the box. Being public, it lets anyone who holds
# a key check whether it appears in the data: set TOKENTRAIL_FINGERPRINT_SALT (or fingerprint_salt=) in production.
DEFAULT_FINGERPRINT_SALT: Final = "tokentrail-default-fingerprint-salt-v1"
FINGERPRINT_LENGTH: Final = 16

# The environment variables in which provider SDKs and their users conventionally keep the service's own keys.
SYSTEM_KEY_ENV_VARS: Final = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY",
    "XAI_API_KEY",
    "OPENROUTER_API_KEY",
    "TOGETHER_API_KEY",
    "FIREWORKS_API_KEY",
    "AI_GATEWAY_API_KEY",
    # AWS Bedrock: the access key id is the credential's identity (never the secret), or a Bedrock API key.
    "AWS_ACCESS_KEY_ID",
    "AWS_BEARER_TOKEN_BEDROCK",
)

_warned_default_salt = False


def resolve_salt(fingerprint_salt: str | bytes | None, environ: Mapping[str, str] | None = None) -> bytes:
    """The salt to fingerprint with: the argument, else the environment, else the default (with one warning)."""
    global _warned_default_salt
    if fingerprint_salt:
        return fingerprint_salt.encode() if isinstance(fingerprint_salt, str) else fingerprint_salt
    env_salt = (os.environ if environ is None else environ).get(semconv.ENV_FINGERPRINT_SALT)
    if env_salt:
        return env_salt.encode()
    if not _warned_default_salt:
        _warned_default_salt = True
        log.warning(
            "TokenTrail: no fingerprint salt configured; tokentrail.credential.id uses the public default salt. "
            "Set %s (or instrument(fingerprint_salt=...)) to a secret value.",
            semconv.ENV_FINGERPRINT_SALT,
        )
    return DEFAULT_FINGERPRINT_SALT.encode()


def fingerprint(key: str, salt: bytes) -> str:
    """The salted HMAC-SHA256 of ``key``, hex, truncated to ``FINGERPRINT_LENGTH`` characters (64 bits)."""
    return hmac.new(salt, key.encode(), hashlib.sha256).hexdigest()[:FINGERPRINT_LENGTH]


def system_key_fingerprints(
    salt: bytes, extra_keys: Iterable[str] | None = None, environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """Fingerprints of every key the service was configured with: env keys, TOKENTRAIL_SYSTEM_KEYS, ``extra_keys``."""
    env = os.environ if environ is None else environ
    keys: list[str] = [env[name] for name in SYSTEM_KEY_ENV_VARS if env.get(name)]
    keys.extend(part.strip() for part in env.get(semconv.ENV_SYSTEM_KEYS, "").split(","))
    if isinstance(extra_keys, str):
        extra_keys = [extra_keys]  # one key passed bare, not its characters
    keys.extend(extra_keys or ())
    return frozenset(fingerprint(key, salt) for key in keys if key)


def _keys(keys: Iterable[str] | None) -> list[str]:
    if isinstance(keys, str):
        return [keys]  # one key passed bare, not its characters
    return [key for key in (keys or ()) if key]


def byok_key_fingerprints(salt: bytes, keys: Iterable[str] | None = None) -> frozenset[str]:
    """Fingerprints of the keys ``byok_keys`` names: each a fingerprint already, or a key (fingerprinted here, and
    not kept), as in ``credential_names``."""
    return frozenset(key if _is_fingerprint(key) else fingerprint(key, salt) for key in _keys(keys))


# What a key is when nothing names it: the service's own.
UNKNOWN_KEYS_DEFAULT: Final = "system"


def unknown_key_type(value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The type of a key nothing names: the argument, else ``TOKENTRAIL_UNKNOWN_KEYS``, else ``system``.

    Any other value is refused: a misspelt ``byok`` that quietly meant ``system`` (or the reverse) would misprice
    every call."""
    source = "unknown_keys"
    if value is None:
        value = (os.environ if environ is None else environ).get(semconv.ENV_UNKNOWN_KEYS, "")
        source = semconv.ENV_UNKNOWN_KEYS
    if not isinstance(value, str):
        raise TypeError(f"TokenTrail: {source} must be 'system' or 'byok', not {type(value).__name__}")
    normalised = value.strip().lower()
    if not normalised:
        return UNKNOWN_KEYS_DEFAULT
    if normalised not in semconv.CREDENTIAL_TYPES:
        raise ValueError(f"TokenTrail: {source}={value!r} is not one of 'system', 'byok'")
    return normalised


# Asked with a call's credential id (the fingerprint, never the key): True for a customer's key, False for the
# service's own, None to leave it to the other rules.
ByokResolver = Callable[[str], "bool | None"]


def describe_rule(
    unknown: str, system_count: int, byok_count: int, resolver: ByokResolver | None, source: str
) -> str:
    """The credential rule in force, in one line for the log (counts only: never a key nor a fingerprint)."""
    named = f"byok_keys: {byok_count}, byok resolver: {'yes' if resolver is not None else 'none'}"
    if unknown == "byok":
        return (
            f"TokenTrail credentials: a key is byok ({source}=byok) except the {system_count} system key(s) "
            f"(provider *_API_KEY variables, {semconv.ENV_SYSTEM_KEYS}, system_keys); attribute(credential=...) and "
            f"the byok resolver come first ({named})"
        )
    return (
        'TokenTrail credentials: a key is the service\'s own (system) unless attribute(credential="byok"), byok_keys '
        f"or the byok resolver say otherwise ({named}; {semconv.ENV_UNKNOWN_KEYS}=byok makes unlisted keys byok)"
    )


def _is_fingerprint(value: str) -> bool:
    return len(value) == FINGERPRINT_LENGTH and all(char in "0123456789abcdef" for char in value)


def credential_names(
    salt: bytes, names: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Friendly names by fingerprint, from ``TOKENTRAIL_CREDENTIAL_NAMES`` and ``names`` (which wins).

    Each entry is ``fingerprint=name``; an entry whose left side is not a fingerprint is taken as the key itself
    and fingerprinted here, so a configuration may name keys it already holds without anyone computing anything.
    The env value is ``fp=name`` pairs separated by commas; a malformed pair is skipped with a warning.
    """
    raw = (os.environ if environ is None else environ).get(semconv.ENV_CREDENTIAL_NAMES, "")
    pairs: list[tuple[str, str]] = []
    for entry in raw.split(","):
        left, sep, name = entry.strip().rpartition("=")
        if sep and left.strip() and name.strip():
            pairs.append((left.strip(), name.strip()))
        elif entry.strip():
            log.warning("TokenTrail: an entry of %s is not fingerprint=name; ignored", semconv.ENV_CREDENTIAL_NAMES)
    pairs.extend((key, name) for key, name in (names or {}).items() if key and name)
    return {(left if _is_fingerprint(left) else fingerprint(left, salt)): name for left, name in pairs}


def key_of(authorization: str | None, x_api_key: str | None = None, api_key: str | None = None) -> str | None:
    """The API key in a request's ``Authorization: Bearer``, Anthropic's ``x-api-key`` or Azure's ``api-key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for value in (x_api_key, api_key):
        if value:
            return value.strip()
    return None


def request_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request carries (see ``key_of``)."""
    return key_of(headers.get("authorization"), headers.get("x-api-key"), headers.get("api-key"))


# How many distinct credential header values a Fingerprinter remembers before it starts again.
MAX_REMEMBERED: Final = 1024


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value else None


class Fingerprinter:
    """The credential type, id and name of the key in a request's credential headers, remembered per header value.

    A service sends the same few keys over and over: the HMAC, the header decoding, the key lists and the friendly
    name are done once per key, then a call costs one dictionary lookup (and one call of the ``byok`` resolver, when
    there is one: its answer may change, so it is not remembered). The memory holds at most ``MAX_REMEMBERED`` header
    values, in this process only, where the keys already are (in the SDK clients, in every request's headers); it is
    never logged nor exported, and new settings (``instrument()`` again: a new salt, new keys or names) start a new
    one.
    """

    __slots__ = ("_salt", "_system", "_byok", "_unknown", "_resolver", "_resolver_warned", "_names", "_known")

    def __init__(
        self,
        salt: bytes,
        system_fingerprints: frozenset[str] = frozenset(),
        names: Mapping[str, str] | None = None,
        byok_fingerprints: frozenset[str] = frozenset(),
        unknown: str = UNKNOWN_KEYS_DEFAULT,
        resolver: ByokResolver | None = None,
    ) -> None:
        self._salt = salt
        self._system = system_fingerprints
        self._byok = byok_fingerprints
        self._unknown = unknown
        self._resolver = resolver
        self._resolver_warned = False
        self._names = names or {}
        # Per (authorization, x-api-key, api-key): (fingerprint, its type unless told otherwise, its friendly name).
        self._known: dict[tuple[bytes | None, bytes | None, bytes | None], tuple[str | None, str | None, str | None]] = {}

    def __repr__(self) -> str:
        return f"Fingerprinter({len(self._known)} remembered)"  # never the keys

    def _learn(self, headers: tuple[bytes | None, bytes | None, bytes | None]) -> tuple[str | None, str | None, str | None]:
        """What ``_known`` holds for these raw (authorization, x-api-key, api-key) values, computed and remembered."""
        key = key_of(_text(headers[0]), _text(headers[1]), _text(headers[2]))
        if key is None:
            known: tuple[str | None, str | None, str | None] = (None, None, None)
        else:
            key_id = fingerprint(key, self._salt)
            # A customer's key named as such wins over the system keys: a dedicated deployment may hold a customer's
            # key in OPENAI_API_KEY.
            if key_id in self._byok:
                kind = "byok"
            elif key_id in self._system:
                kind = "system"
            else:
                kind = self._unknown
            known = (key_id, kind, self._names.get(key_id))
        if len(self._known) >= MAX_REMEMBERED:
            self._known.clear()
        self._known[headers] = known
        return known

    def _ask(self, resolver: ByokResolver, key_id: str) -> str | None:
        """The resolver's answer for ``key_id`` as a credential type, or None. A failing or confused resolver is
        reported once and then ignored per call: the call goes on with the other rules."""
        try:
            answer = resolver(key_id)
        except Exception:  # noqa: BLE001 - the application's resolver must not break its own LLM call
            if not self._resolver_warned:
                self._resolver_warned = True
                log.warning("TokenTrail: the byok resolver raised; the other credential rules apply", exc_info=True)
            return None
        if answer is True:
            return "byok"
        if answer is False:
            return "system"
        if answer is not None and not self._resolver_warned:
            self._resolver_warned = True
            log.warning(
                "TokenTrail: the byok resolver returned a %s, not True, False or None; ignored", type(answer).__name__
            )
        return None

    def classify(
        self, authorization: bytes | None, x_api_key: bytes | None, api_key: bytes | None, explicit: str | None
    ) -> tuple[str | None, str | None, str | None]:
        """``(credential type, credential id, credential name)`` of the key in these raw headers (see ``key_of``).

        An explicit type from ``attribute()`` wins; then the ``byok`` resolver's answer for the fingerprint; then the
        lists given at creation (``byok_keys`` before the system keys); else the type of unknown keys (``system``
        unless told otherwise). Without a key there is nothing to fingerprint, but an explicit type is still worth
        reporting. The name is the one configured for the fingerprint."""
        headers = (authorization, x_api_key, api_key)
        known = self._known.get(headers)
        if known is None:
            known = self._learn(headers)
        if explicit is not None:
            return explicit, known[0], known[2]
        resolver = self._resolver
        if resolver is not None and known[0] is not None:
            answer = self._ask(resolver, known[0])
            if answer is not None:
                return answer, known[0], known[2]
        return known[1], known[0], known[2]
