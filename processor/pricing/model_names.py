"""Provider and model names as they arrive on spans -> names the ``genai-prices`` catalog knows.

The table is data, ``model_names.toml`` beside this module (its comments explain every section); this module only
reads it and applies it. ``candidates`` lists the (provider, model) names to look up in the catalog, the name as it
arrived first, then rewrites breadth-first; the pricer takes the first the catalog knows and remembers which
rewrites it took, so ``tokentrail prices explain`` can show them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from tokentrail.processor.errors import TokenTrailError

__all__ = [
    "CREATORS",
    "GATEWAYS",
    "PROVIDER_IDS",
    "REWRITES",
    "SERVICE_TIERS",
    "Candidate",
    "Creator",
    "NameTable",
    "NameTableError",
    "Rewrite",
    "candidates",
    "canonical_provider",
    "load_table",
    "price_context",
]

TABLE_FILE: Final = "model_names.toml"
MAX_CANDIDATES: Final = 16  # a bound on the names tried for one unknown model (each costs a catalog lookup)


@dataclass(frozen=True, slots=True)
class Creator:
    """A model-name prefix ("xai/") and where its models are priced."""

    provider: str
    model: str = "{model}"  # how the rest of the name is spelled at that provider


@dataclass(frozen=True, slots=True)
class Rewrite:
    name: str
    pattern: re.Pattern[str]
    model: str
    provider: str | None
    when_provider: frozenset[str] | None
    examples: tuple[tuple[str, str, str, str], ...]

    def apply(self, provider: str, model: str, creators: Mapping[str, Creator]) -> tuple[str, str] | None:
        """The rewritten (provider, model), or None when this rewrite does not apply."""
        match = self.pattern.fullmatch(model.lower())
        if match is None:
            return None
        groups = match.groupdict()
        creator = creators.get(groups["creator"]) if "creator" in groups else None
        if self.when_provider is not None:
            allowed = {creator.provider if p == "{creator}" and creator else p for p in self.when_provider}
            if provider not in allowed:
                return None
        new_model = _fill(self.model, match)
        new_provider = provider
        if self.provider == "{creator}":
            if creator is None:
                return None
            new_provider = creator.provider
            new_model = creator.model.replace("{model}", new_model)
        elif self.provider is not None:
            new_provider = self.provider
        if (new_provider, new_model) == (provider, model.lower()):
            return None
        return new_provider, new_model


def _fill(template: str, match: re.Match[str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: match.group(int(m[1]) if m[1].isdigit() else m[1]) or "", template)


@dataclass(frozen=True, slots=True)
class NameTable:
    providers: Mapping[str, str]
    gateways: frozenset[str]
    fallback_provider: str
    creators: Mapping[str, Creator]
    rewrites: tuple[Rewrite, ...]
    service_tiers: Mapping[str, Mapping[str, str]]


class NameTableError(TokenTrailError, ValueError):
    """``model_names.toml`` is malformed (a packaging or editing mistake, caught by the tests)."""


def load_table(text: str | None = None) -> NameTable:
    """Parses the table (the packaged file by default)."""
    if text is None:
        text = resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    try:
        providers = {str(k).lower(): str(v) for k, v in raw["providers"].items()}
        gateways = frozenset(str(g) for g in raw["gateways"]["names"])
        fallback = str(raw["gateways"]["fallback_provider"])
        creators = {str(k).lower(): Creator(**v) for k, v in raw["creators"].items()}
        rewrites = tuple(_rewrite(r) for r in raw["rewrite"])
        tiers = {
            str(k).lower(): MappingProxyType({str(a): str(b) for a, b in v.items()})
            for k, v in raw["service_tiers"].items()
        }
    except (KeyError, TypeError, re.error) as exc:
        raise NameTableError(f"{TABLE_FILE}: {exc!r}") from exc
    return NameTable(
        MappingProxyType(providers), gateways, fallback, MappingProxyType(creators), rewrites, MappingProxyType(tiers)
    )


def _rewrite(raw: dict[str, Any]) -> Rewrite:
    unknown = set(raw) - {"name", "pattern", "model", "provider", "when_provider", "examples"}
    if unknown:
        raise KeyError(f"rewrite {raw.get('name')!r}: unknown keys {sorted(unknown)}")
    when = raw.get("when_provider")
    return Rewrite(
        name=raw["name"],
        pattern=re.compile(raw["pattern"]),
        model=raw["model"],
        provider=raw.get("provider"),
        when_provider=frozenset(when) if when is not None else None,
        examples=tuple(tuple(e) for e in raw.get("examples", ())),
    )


TABLE: Final = load_table()
PROVIDER_IDS: Final = TABLE.providers
GATEWAYS: Final = TABLE.gateways
CREATORS: Final = TABLE.creators
REWRITES: Final = TABLE.rewrites
SERVICE_TIERS: Final = TABLE.service_tiers


@lru_cache(maxsize=4096)  # provider names are few; spans repeat them endlessly (normalize calls this per span)
def canonical_provider(name: str) -> str:
    """One provider vocabulary for records and reports, whichever instrumentation named it."""
    key = name.strip().lower()
    mapped = PROVIDER_IDS.get(key)
    if mapped is not None:
        return mapped
    head = key.split(".", 1)[0]
    if head != key:
        mapped = PROVIDER_IDS.get(head)
        if mapped is not None:
            return mapped
    return key


def price_context(service_tier: str | None) -> Mapping[str, str] | None:
    """The genai-prices ``price_context`` for a record's service tier (None: standard prices)."""
    if not service_tier:
        return None
    return SERVICE_TIERS.get(service_tier.strip().lower())


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    model: str
    via: tuple[str, ...] = ()  # the rewrites that produced this name, in order ("alias" for an overrides alias)


def candidates(
    provider: str,
    model: str,
    *,
    table: NameTable = TABLE,
    alias: tuple[str, str] | None = None,
    limit: int = MAX_CANDIDATES,
) -> list[Candidate]:
    """Names to try in the catalog, in order: an overrides alias (authoritative), the name as it arrived, then
    rewrites breadth-first (fewest rewrites first). ``provider`` is a canonical provider id."""
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    queue: list[Candidate] = []
    if alias is not None:
        queue.append(Candidate(alias[0], alias[1], ("alias",)))
    queue.append(Candidate(provider, model))
    i = 0
    while i < len(queue) and len(out) < limit:
        c = queue[i]
        i += 1
        key = (c.provider, c.model.lower())
        if key in seen:
            continue
        seen.add(key)
        out.append(c)
        for rw in table.rewrites:
            new = rw.apply(c.provider, c.model, table.creators)
            if new is not None and new not in seen:
                queue.append(Candidate(new[0], new[1], (*c.via, rw.name)))
    return out
