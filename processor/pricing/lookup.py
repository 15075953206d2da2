"""Which catalog model a provider and model name, as it arrived on a span, is priced as.

A name the ``genai-prices`` catalog does not know as it arrived is rewritten by ``model_names`` (data in
``model_names.toml``) and by the overrides file's aliases; the first candidate the catalog knows wins. The overrides
parser checks its names through here too, so this module sits below both ``overrides`` and ``catalog`` (they import
it; it imports neither).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genai_prices import data_snapshot as _snapshot
from genai_prices.types import ModelInfo, Provider
from tokentrail.processor.pricing.model_names import Candidate, candidates, canonical_provider

__all__ = [
    "NameMatch",
    "catalog_knows",
    "catalog_model_ids",
    "catalog_provider_ids",
    "resolve_name",
]


@dataclass(frozen=True, slots=True)
class NameMatch:
    """The catalog model a (provider, model) name was priced as, and how it was found."""

    provider: Provider
    model: ModelInfo
    ref: Candidate  # the name looked up (the one the catalog knew)

    @property
    def via(self) -> tuple[str, ...]:
        return self.ref.via


def _lookup(snapshot: Any, provider_id: str, model: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None


def resolve_name(
    provider: str, model: str, aliases: Mapping[tuple[str, str], tuple[str, str]] | None = None
) -> NameMatch | None:
    """The catalog model for a name as it arrived (``provider`` canonical or not), or None."""
    snapshot = _snapshot.get_snapshot()
    provider = canonical_provider(provider)
    alias = aliases.get((provider, model.lower())) if aliases else None
    for candidate in candidates(provider, model, alias=alias):
        found = _lookup(snapshot, candidate.provider, candidate.model)
        if found is not None:
            return NameMatch(found[0], found[1], candidate)
    return None


def catalog_knows(provider: str, model: str, aliases: Mapping[tuple[str, str], tuple[str, str]]) -> bool:
    return resolve_name(provider, model, aliases) is not None


def catalog_provider_ids() -> set[str]:
    return {p.id for p in _snapshot.get_snapshot().providers}


def catalog_model_ids(provider: str | None) -> list[str]:
    """Lowercased model ids of one catalog provider (with the providers it falls back to), or of all."""
    providers = _snapshot.get_snapshot().providers
    if provider is None:
        return [m.id.lower() for p in providers for m in p.models]
    by_id = {p.id: p for p in providers}
    chosen = by_id.get(provider)
    if chosen is None:
        return []
    ids = [m.id.lower() for m in chosen.models]
    for fallback in chosen.fallback_model_providers or ():
        if fallback in by_id:
            ids.extend(m.id.lower() for m in by_id[fallback].models)
    return ids
