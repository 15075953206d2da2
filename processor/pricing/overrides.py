"""The pricing overrides file: what this organisation pays, models the catalog lacks, names only it knows.

A TOML file named by ``TOKENTRAIL_PRICING`` (or ``--pricing``). It is validated in full when loaded: every problem
is reported at once, each with the line it is on, and a bad file stops the receiver at start (``Pricer()`` raises
``PricingConfigError``), never mid-flight. Example::

    [byok]
    total_cost = "zero"            # BYOK calls: "zero" (default) costs the organisation nothing; "list": list price

    [aliases.azure]                # names only this organisation uses -> catalog models (Azure deployments,
    "prod-chat" = "gpt-4o-2024-08-06"  # Bedrock application inference profiles, ...); a value may also be
                                   # { provider = "openai", model = "gpt-4o" }

    [[rule]]                       # what the organisation pays: total_cost. The FIRST matching rule applies.
    provider = "anthropic"         # provider and/or model (a glob: "claude-sonnet-4*"), matched against the name
    model = "claude-sonnet-4-5"    #   as it arrived and the catalog model it was priced as
    input_mtok = 2.70              # explicit USD per million tokens: input and output required; cached_input_mtok
    output_mtok = 13.50            #   and cache_write_mtok default to input_mtok, cache_write_1h_mtok to
    cached_input_mtok = 0.27       #   cache_write_mtok (no cache discount is assumed: never an understatement)
    start_date = 2026-01-01        # optional effective range, UTC days, both inclusive
    end_date = 2026-12-31
    note = "MSA 2026, order form 7"

    [[rule]]
    provider = "openai"
    discount_percent = 12.5        # or: a percentage off the list price (all of it, every tier)

    [[model]]                      # a model the catalog does not price (in-house, fine-tuned, new): its list
    provider = "acme"              #   price, i.e. market_cost. Same price keys as a rule. A model the catalog
    model = "acme-llm-9*"          #   does price keeps the catalog's list price; a [[rule]] sets what you pay.
    input_mtok = 1
    output_mtok = 3

``market_cost`` is always the catalog's list price (or a ``[[model]]``'s, when the catalog lacks the model);
``total_cost`` is what the organisation pays: the first matching ``[[rule]]`` applied to it for system
credentials, the ``[byok]`` policy for keys customers brought. Explicit prices (a rule's or a ``[[model]]``'s)
count audio tokens as input or output tokens and reasoning tokens as output tokens at ``output_mtok`` (they have no
per-modality or reasoning prices).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from tokentrail.processor.errors import TokenTrailError
from tokentrail.processor.pricing.lookup import catalog_knows, catalog_model_ids, catalog_provider_ids
from tokentrail.processor.pricing.model_names import GATEWAYS, canonical_provider

__all__ = [
    "BYOK_LIST",
    "BYOK_ZERO",
    "NO_OVERRIDES",
    "CustomModel",
    "Overrides",
    "PricingConfigError",
    "Rates",
    "Rule",
    "load_overrides",
    "parse_overrides",
]

log = logging.getLogger(__name__)

BYOK_ZERO: Final = "zero"
BYOK_LIST: Final = "list"
MILLION: Final = Decimal(1_000_000)
PRICE_KEYS: Final = ("input_mtok", "cached_input_mtok", "cache_write_mtok", "cache_write_1h_mtok", "output_mtok")
_COMMON_KEYS: Final = ("provider", "model", "start_date", "end_date", "note")
RULE_KEYS: Final = (*_COMMON_KEYS, "discount_percent", *PRICE_KEYS)
MODEL_KEYS: Final = (*_COMMON_KEYS, *PRICE_KEYS)
TOP_KEYS: Final = ("byok", "aliases", "rule", "model")


class PricingConfigError(TokenTrailError, ValueError):
    """The overrides file is invalid. ``errors`` lists every problem as ``FILE:LINE: problem``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid pricing overrides:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True, slots=True)
class Rates:
    """Explicit prices in USD per million tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    # USD per token (exact: dividing by a million only moves the decimal point), computed once
    per_token: tuple[Decimal, Decimal, Decimal, Decimal, Decimal] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = (self.input, self.cached_input, self.cache_write, self.cache_write_1h, self.output)
        object.__setattr__(self, "per_token", tuple(r / MILLION for r in rates))

    def cost(self, uncached_input: int, cached_input: int, cache_write_5m: int, cache_write_1h: int, output: int) -> Decimal:
        i, c, w, h, o = self.per_token
        return i * uncached_input + c * cached_input + w * cache_write_5m + h * cache_write_1h + o * output

    def describe(self) -> str:
        return (
            f"input ${self.input}, cached input ${self.cached_input}, cache write ${self.cache_write} "
            f"(1h ${self.cache_write_1h}), output ${self.output} per MTok"
        )


@dataclass(frozen=True, slots=True)
class _Scoped:
    line: int
    source: str
    index: int  # position among the file's [[rule]] or [[model]] tables
    provider: str | None  # canonical provider id
    model: str | None  # lowercased glob
    start: date | None
    end: date | None
    note: str | None

    def in_effect(self, day: date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)

    def matches(self, provider: str, names: Iterable[str], day: date) -> bool:
        if self.provider is not None and provider != self.provider:
            return False
        if not self.in_effect(day):
            return False
        if self.model is None:
            return True
        return any(fnmatch.fnmatchcase(name, self.model) for name in names)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def scope(self) -> str:
        parts = []
        if self.provider:
            parts.append(f"provider {self.provider}")
        if self.model:
            parts.append(f"model {self.model}")
        if self.start or self.end:
            parts.append(f"{self.start or '…'} to {self.end or '…'}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Rule(_Scoped):
    """What the organisation pays for matching calls: a discount off the list price, or explicit prices."""

    discount_percent: Decimal | None = None
    rates: Rates | None = None
    # The share of the list price paid: (100 - discount) / 100, exact (dividing by 100 moves the decimal point)
    factor: Decimal | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.discount_percent is not None:
            object.__setattr__(self, "factor", (100 - self.discount_percent) / 100)

    def total(self, market_cost: Decimal, counts: tuple[int, int, int, int, int]) -> Decimal:
        if self.factor is not None:
            return market_cost * self.factor
        assert self.rates is not None
        return self.rates.cost(*counts)

    def describe(self) -> str:
        what = f"{self.discount_percent}% off the list price" if self.rates is None else self.rates.describe()
        note = f" ({self.note})" if self.note else ""
        return f"rule at {self.where} [{self.scope()}]: {what}{note}"


@dataclass(frozen=True, slots=True)
class CustomModel(_Scoped):
    """The list price of a model the catalog does not know."""

    rates: Rates

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"custom model at {self.where} [{self.scope()}]: {self.rates.describe()}{note}"


@dataclass(frozen=True)
class Overrides:
    source: str | None = None
    digest: str | None = None  # sha256 of the file's bytes
    byok: str = BYOK_ZERO
    rules: tuple[Rule, ...] = ()
    models: tuple[CustomModel, ...] = ()
    aliases: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def version_tag(self) -> str | None:
        """What ``price_version`` carries to say these overrides produced a cost."""
        return f"overrides={self.digest[:12]}" if self.digest else None

    def rule_for(self, provider: str, names: Iterable[str], day: date) -> Rule | None:
        names = tuple(names)
        for rule in self.rules:
            if rule.matches(provider, names, day):
                return rule
        return None

    def custom_model_for(self, provider: str, names: Iterable[str], day: date) -> CustomModel | None:
        names = tuple(names)
        for model in self.models:
            if model.matches(provider, names, day):
                return model
        return None

    def alias_for(self, provider: str, model: str) -> tuple[str, str] | None:
        return self.aliases.get((provider, model.lower())) if self.aliases else None


NO_OVERRIDES: Final = Overrides()

# Given (provider, model, aliases): whether the catalog (through name mapping) prices that model.
CatalogCheck = Callable[[str, str, Mapping[tuple[str, str], tuple[str, str]]], bool]


def load_overrides(path: str | Path, *, catalog_check: CatalogCheck | None = None) -> Overrides:
    """Reads and validates an overrides file; raises ``PricingConfigError`` naming every bad line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PricingConfigError([f"{path}: cannot read the pricing overrides file: {exc.strerror or exc}"]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PricingConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from exc
    return parse_overrides(text, source=str(path), digest=hashlib.sha256(data).hexdigest(), catalog_check=catalog_check)


def parse_overrides(
    text: str, *, source: str = "<pricing>", digest: str | None = None, catalog_check: CatalogCheck | None = None
) -> Overrides:
    """Parses overrides from TOML text. ``catalog_check`` (default: the catalog's) verifies names against the catalog."""
    if digest is None:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PricingConfigError([_syntax_error(source, exc)]) from None
    return _Parser(text, source, catalog_check or catalog_knows).parse(raw, digest)


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    if m:
        return f"{source}:{m[1]}: TOML syntax error: {message[: m.start()].strip()} (column {m[2]})"
    return f"{source}: TOML syntax error: {message}"


class _Locator:
    """Line numbers for tables and keys (tomllib gives values, not positions)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.sections: list[tuple[int, str, int | None]] = [(1, "", None)]  # (line, name, array index)
        counts: dict[str, int] = {}
        for number, line in enumerate(self.lines, 1):
            m = self._HEADER.match(line)
            if not m:
                continue
            name = ".".join(part.strip().strip("\"'") for part in m[2].split("."))
            index = None
            if m[1] == "[[":
                index = counts[name] = counts.get(name, -1) + 1
            self.sections.append((number, name, index))

    def _span(self, name: str, index: int | None) -> tuple[int, int] | None:
        for i, (line, section, idx) in enumerate(self.sections):
            if section == name and idx == index:
                end = self.sections[i + 1][0] if i + 1 < len(self.sections) else len(self.lines) + 1
                return line, end
        return None

    def line(self, name: str, index: int | None = None, key: str | None = None) -> int:
        span = self._span(name, index)
        if span is None:  # e.g. an inline table: point at the top-level key that holds it
            span = self._span("", None)
            assert span is not None
            key = name.split(".", 1)[0]
        start, end = span
        if key is not None:
            pattern = re.compile(rf"^\s*([\"']?){re.escape(key)}\1\s*=")
            for number in range(start, end):
                if pattern.match(self.lines[number - 1]):
                    return number
            if name == "":  # a top-level key written as a table header: [key] or [key.sub]
                for line, section, _ in self.sections:
                    if section == key or section.startswith(key + "."):
                        return line
        return start


class _Parser:
    def __init__(self, text: str, source: str, catalog_check: CatalogCheck) -> None:
        self.loc = _Locator(text)
        self.source = source
        self.check = catalog_check
        self.errors: list[str] = []
        self.alias_lines: dict[tuple[str, str], int] = {}

    def error(self, line: int, message: str) -> None:
        self.errors.append(f"{self.source}:{line}: {message}")

    def parse(self, raw: dict[str, Any], digest: str) -> Overrides:
        for key in raw:
            if key not in TOP_KEYS:
                self.error(self.loc.line("", None, key), _unknown("top-level key", key, TOP_KEYS))
        byok = self._byok(raw.get("byok", {}))
        aliases_raw = raw.get("aliases", {})
        models = tuple(m for i, t in enumerate(self._array(raw, "model")) if (m := self._model(i, t)) is not None)
        rules = tuple(r for i, t in enumerate(self._array(raw, "rule")) if (r := self._rule(i, t)) is not None)
        aliases = self._aliases(aliases_raw)
        self._check_names(rules, models, aliases)
        self._check_shadowing(rules)
        if self.errors:
            raise PricingConfigError(sorted(self.errors, key=_line_of))
        return Overrides(
            source=self.source,
            digest=digest,
            byok=byok,
            rules=rules,
            models=models,
            aliases=MappingProxyType(aliases),
        )

    def _array(self, raw: dict[str, Any], name: str) -> list[Any]:
        value = raw.get(name, [])
        if not isinstance(value, list):
            self.error(self.loc.line(name), f"'{name}' must be an array of tables: write [[{name}]]")
            return []
        return value

    def _byok(self, value: Any) -> str:
        if not isinstance(value, dict):
            self.error(self.loc.line("", None, "byok"), "'byok' must be a table: [byok] total_cost = \"zero\" or \"list\"")
            return BYOK_ZERO
        for key in value:
            if key != "total_cost":
                self.error(self.loc.line("byok", None, key), _unknown("key in [byok]", key, ("total_cost",)))
        policy = value.get("total_cost", BYOK_ZERO)
        if policy not in (BYOK_ZERO, BYOK_LIST):
            self.error(
                self.loc.line("byok", None, "total_cost"),
                f"[byok] total_cost must be \"{BYOK_ZERO}\" (BYOK calls cost the organisation nothing) or "
                f"\"{BYOK_LIST}\" (the list price), got {policy!r}",
            )
            return BYOK_ZERO
        return str(policy)

    def _aliases(self, value: Any) -> dict[tuple[str, str], tuple[str, str]]:
        out: dict[tuple[str, str], tuple[str, str]] = {}
        if not isinstance(value, dict):
            self.error(self.loc.line("", None, "aliases"), "'aliases' must be tables: [aliases.<provider>] name = \"model\"")
            return out
        for provider_name, table in value.items():
            section = f"aliases.{provider_name}"
            if not isinstance(table, dict):
                self.error(self.loc.line("aliases", None, provider_name), f"[{section}] must be a table of name = \"model\"")
                continue
            provider = canonical_provider(provider_name)
            for name, target in table.items():
                line = self.loc.line(section, None, name)
                if isinstance(target, str) and target.strip():
                    resolved = (provider, target.strip())
                elif isinstance(target, dict) and set(target) <= {"provider", "model"} and isinstance(target.get("model"), str):
                    target_provider = target.get("provider", provider_name)
                    if not isinstance(target_provider, str):
                        self.error(line, f"alias {name!r}: provider must be a string")
                        continue
                    resolved = (canonical_provider(target_provider), target["model"].strip())
                else:
                    self.error(line, f"alias {name!r} must be a model name or {{ provider = \"...\", model = \"...\" }}")
                    continue
                key = (provider, str(name).strip().lower())
                out[key] = resolved
                self.alias_lines[key] = line
        return out

    def _scoped(self, kind: str, index: int, table: Any, keys: tuple[str, ...]) -> dict[str, Any] | None:
        header = self.loc.line(kind, index)
        if not isinstance(table, dict):
            self.error(header, f"[[{kind}]] must be a table")
            return None
        ok = True
        for key in table:
            if key not in keys:
                self.error(self.loc.line(kind, index, key), _unknown(f"key in [[{kind}]]", key, keys))
                ok = False
        out: dict[str, Any] = {"line": header, "source": self.source, "index": index}
        for key in ("provider", "model", "note"):
            value = table.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                self.error(self.loc.line(kind, index, key), f"{key} must be a non-empty string")
                ok = False
                value = None
            out[key] = value.strip() if isinstance(value, str) else None
        if out["provider"]:
            out["provider"] = canonical_provider(out["provider"])
        if out["model"]:
            out["model"] = out["model"].lower()
        for key in ("start_date", "end_date"):
            out[key] = self._date(kind, index, key, table.get(key))
        if out["start_date"] and out["end_date"] and out["start_date"] > out["end_date"]:
            self.error(self.loc.line(kind, index, "end_date"), f"end_date {out['end_date']} is before start_date {out['start_date']}")
            ok = False
        out["ok"] = ok
        return out

    def _date(self, kind: str, index: int, key: str, value: Any) -> date | None:
        if value is None:
            return None
        line = self.loc.line(kind, index, key)
        if isinstance(value, datetime):
            self.error(line, f"{key} must be a date (YYYY-MM-DD, a UTC day), not a date and time")
            return None
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        self.error(line, f"{key} must be a date (YYYY-MM-DD), got {value!r}")
        return None

    def _number(self, kind: str, index: int, key: str, value: Any) -> Decimal | None:
        line = self.loc.line(kind, index, key)
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self.error(line, f"{key} must be a number, got {value!r}")
            return None
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
        except InvalidOperation:
            self.error(line, f"{key} must be a number, got {value!r}")
            return None
        if not number.is_finite() or number < 0:
            self.error(line, f"{key} must be a finite number ≥ 0, got {value!r}")
            return None
        return number

    def _rates(self, kind: str, index: int, table: dict[str, Any]) -> Rates | None | Literal[False]:
        """Rates from the price keys; None when there are none; False when they are invalid (already reported)."""
        given = {k: table[k] for k in PRICE_KEYS if k in table}
        if not given:
            return None
        numbers = {k: self._number(kind, index, k, v) for k, v in given.items()}  # every bad one is reported
        values = {k: v for k, v in numbers.items() if v is not None}
        if len(values) < len(numbers):
            return False
        missing = [k for k in ("input_mtok", "output_mtok") if k not in values]
        if missing:
            self.error(
                self.loc.line(kind, index),
                f"[[{kind}]] with explicit prices needs {' and '.join(missing)} (USD per million tokens)",
            )
            return False
        inp = values["input_mtok"]
        write = values.get("cache_write_mtok", inp)
        return Rates(
            input=inp,
            output=values["output_mtok"],
            cached_input=values.get("cached_input_mtok", inp),
            cache_write=write,
            cache_write_1h=values.get("cache_write_1h_mtok", write),
        )

    def _rule(self, index: int, table: Any) -> Rule | None:
        scoped = self._scoped("rule", index, table, RULE_KEYS)
        if scoped is None:
            return None
        line = scoped["line"]
        if not scoped["ok"]:
            self._rates("rule", index, table)  # report bad prices too: every problem at once
            return None
        if not scoped["provider"] and not scoped["model"]:
            self.error(line, "[[rule]] needs provider, model or both (a rule for every call is a discount on the bill: "
                       "give the provider)")
            return None
        rates = self._rates("rule", index, table)
        discount = None
        if "discount_percent" in table:
            discount = self._number("rule", index, "discount_percent", table["discount_percent"])
            if discount is None:
                return None
            if discount > 100:
                self.error(self.loc.line("rule", index, "discount_percent"), f"discount_percent must be 0 to 100, got {discount}")
                return None
            if rates is not None:
                self.error(line, "[[rule]] has both discount_percent and explicit prices: give one or the other")
                return None
        elif rates is None:
            self.error(line, "[[rule]] needs discount_percent or explicit prices (input_mtok and output_mtok, ...)")
            return None
        if rates is False:
            return None
        return Rule(
            line=line,
            source=self.source,
            index=index,
            provider=scoped["provider"],
            model=scoped["model"],
            start=scoped["start_date"],
            end=scoped["end_date"],
            note=scoped["note"],
            discount_percent=discount,
            rates=rates or None,
        )

    def _model(self, index: int, table: Any) -> CustomModel | None:
        scoped = self._scoped("model", index, table, MODEL_KEYS)
        if scoped is None:
            return None
        line = scoped["line"]
        if not scoped["ok"]:
            self._rates("model", index, table)
            return None
        if not scoped["provider"] or not scoped["model"]:
            self.error(line, "[[model]] needs provider and model")
            return None
        rates = self._rates("model", index, table)
        if rates is None:
            self.error(line, "[[model]] needs prices: input_mtok and output_mtok (USD per million tokens), ...")
            return None
        if rates is False:
            return None
        return CustomModel(
            line=line,
            source=self.source,
            index=index,
            provider=scoped["provider"],
            model=scoped["model"],
            start=scoped["start_date"],
            end=scoped["end_date"],
            note=scoped["note"],
            rates=rates,
        )

    def _check_names(
        self,
        rules: tuple[Rule, ...],
        models: tuple[CustomModel, ...],
        aliases: dict[tuple[str, str], tuple[str, str]],
    ) -> None:
        """Names a rule or alias uses must exist: a typo would otherwise silently change nothing on the bill."""
        providers = catalog_provider_ids()
        custom_providers = {m.provider for m in models if m.provider is not None}

        def custom_knows(provider: str | None, model: str) -> bool:
            return any(
                (provider is None or m.provider == provider)
                and (fnmatch.fnmatchcase(model, m.model or "*") or m.model == model)
                for m in models
            )

        for (provider, name), (target_provider, target_model) in aliases.items():
            if not (self.check(target_provider, target_model, {}) or custom_knows(target_provider, target_model.lower())):
                self.error(
                    self.alias_lines.get((provider, name), 1),
                    f"alias {name!r} -> {target_provider}/{target_model}: the catalog has no such model "
                    "(and no [[model]] declares it)",
                )
        for model in models:
            if not _is_glob(model.model) and self.check(model.provider or "", model.model or "", aliases):
                log.warning(
                    "%s: the catalog prices %s/%s: its list price stays the catalog's (a [[rule]] sets what you pay)",
                    model.where,
                    model.provider,
                    model.model,
                )
        for rule in rules:
            p, m = rule.provider, rule.model
            if p is not None and p not in providers and p not in custom_providers and p not in GATEWAYS:
                close = difflib.get_close_matches(p, sorted(providers | custom_providers), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.error(
                    self.loc.line("rule", rule.index, "provider"),
                    f"provider {p!r} is not in the price catalog and no [[model]] uses it{hint}",
                )
                continue
            if m is None:
                continue
            if _is_glob(m):
                if not any(fnmatch.fnmatchcase(i, m) for i in catalog_model_ids(p)) and not custom_knows(p, m):
                    log.warning(
                        "%s:%d: model pattern %r matches no catalog model id%s; it still matches names as they arrive",
                        self.source,
                        rule.line,
                        m,
                        f" of {p}" if p else "",
                    )
                continue
            known = custom_knows(p, m) or (
                self.check(p, m, aliases)
                if p is not None
                else m in catalog_model_ids(None) or any(self.check(i, m, aliases) for i in sorted(providers))
            )
            if not known:
                where = f" for provider {p!r}" if p else ""
                self.error(
                    self.loc.line("rule", rule.index, "model"),
                    f"model {m!r} is not in the price catalog{where}; declare it in a [[model]] table to give it a "
                    "list price",
                )

    def _check_shadowing(self, rules: tuple[Rule, ...]) -> None:
        for j, later in enumerate(rules):
            for earlier in rules[:j]:
                if (
                    earlier.provider in (None, later.provider)
                    and earlier.model in (None, later.model)
                    and (earlier.start is None or (later.start is not None and earlier.start <= later.start))
                    and (earlier.end is None or (later.end is not None and earlier.end >= later.end))
                ):
                    self.error(
                        later.line,
                        f"this rule never applies: the rule at line {earlier.line} matches every call it would "
                        "(the first matching rule applies: put the more specific rule first)",
                    )
                    break


def _line_of(error: str) -> int:
    m = re.match(r"^.*?:(\d+): ", error)
    return int(m[1]) if m else 0


def _is_glob(pattern: str | None) -> bool:
    return pattern is not None and any(c in pattern for c in "*?[")


def _unknown(what: str, key: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what}: {key!r} ({hint}allowed: {', '.join(allowed)})"
