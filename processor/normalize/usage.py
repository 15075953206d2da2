"""The counts of a call under the house rules, whatever the dialect stated, and the cost a provider reported.

``input_tokens`` includes cached input (a dialect whose count excludes the cache has it added, never the others),
``output_tokens`` includes reasoning, counts billed on top of the main usage (Anthropic's compaction) are added, a
total derives whichever of input or output is missing, and a part (cache reads and writes, reasoning, 1-hour writes,
audio) larger than its whole is capped to it with a note: the record is kept, its numbers consistent. Cached input
larger than the input is the exception: such an input count can only be exclusive of the cache, so the cache is
added to it (with a note), never capped away.
"""

from __future__ import annotations

from collections.abc import Mapping

from tokentrail.processor.normalize.dialects import Dialect
from tokentrail.processor.normalize.rules import VERCEL_PROVIDER_METADATA, Found, SpanLike, Usage
from tokentrail.processor.normalize.values import (
    MAX_REPORTED_COST,
    MAX_TOKENS,
    Notes,
    SpanRejected,
    amount,
    as_lists,
    count,
    json_object,
    plain,
)
from tokentrail.processor.schema import to_picos

__all__ = ["counts", "reported_cost"]


def _first_count(found: Found, keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` (present keys, in the dialect's order) that states a count."""
    for key in keys:
        value = found[key]
        if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, without a call
            return value
        n = count(value, key)
        if n is not None:
            return n
    return None


def counts(
    span: SpanLike,
    found: Found,
    dialect: Dialect,
    keys: Mapping[str, tuple[str, ...]],
    details: bool,
    provider: str,
    notes: Notes,
) -> tuple[int, int, int, int, int, int, int, int, bool]:
    """The counts under every house rule: (input, output, cache read, cache write, reasoning, 1-hour writes, audio
    in, audio out, whether the span stated input or output)."""
    inp = _first_count(found, keys["input_tokens"])
    out = _first_count(found, keys["output_tokens"])
    read = _first_count(found, keys["cache_read"]) or 0
    write = _first_count(found, keys["cache_write"]) or 0
    reasoning = _first_count(found, keys["reasoning"]) or 0
    if not details:  # the common case: the main counts of an inclusive dialect
        counted = inp is not None or out is not None
        inp, out = inp or 0, out or 0
        if read + write <= inp and reasoning <= out:
            return inp, out, read, write, reasoning, 0, 0, 0, counted
        return _capped(inp, out, read, write, reasoning, 0, 0, 0, counted, notes)
    usage = Usage(inp, out, read, write, reasoning, dialect.input_includes_cache)
    usage.cache_write_1h = _first_count(found, keys["cache_write_1h"]) or 0
    usage.input_audio = _first_count(found, keys["input_audio"]) or 0
    usage.output_audio = _first_count(found, keys["output_audio"]) or 0
    if keys["total_tokens"]:
        if (usage.input is None) != (usage.output is None):
            total = _first_count(found, keys["total_tokens"])  # needed: a bad total rejects the span
        elif usage.reasoning and usage.input is not None:
            try:
                total = _first_count(found, keys["total_tokens"])
            except SpanRejected:  # only a check of the output's convention: a bad total is not needed
                total = None
        else:
            total = None
        if total is not None:
            _with_total(usage, total)
    extra_input = sum(count(found[k], k) or 0 for k in keys["extra_input"])
    extra_output = sum(count(found[k], k) or 0 for k in keys["extra_output"])
    if dialect.resolve is not None:
        usage = dialect.resolve(span, found, usage, provider)
    counted = usage.input is not None or usage.output is not None
    inclusive_input = usage.input or 0
    if not usage.input_includes_cache:
        inclusive_input += usage.cache_read + usage.cache_write
    # House rule: cached tokens are part of an inclusive input count, never added on top of it.
    inclusive_input += extra_input
    output_tokens = (usage.output or 0) + extra_output
    if inclusive_input > MAX_TOKENS or output_tokens > MAX_TOKENS:
        raise SpanRejected(f"token counts add up to more than {MAX_TOKENS}")
    return _capped(
        inclusive_input,
        output_tokens,
        usage.cache_read,
        usage.cache_write,
        usage.reasoning,
        usage.cache_write_1h,
        usage.input_audio,
        usage.output_audio,
        counted,
        notes,
    )


def _with_total(usage: Usage, total: int) -> None:
    """What a stated total says: whichever of input or output is missing, or (all three stated) that the output
    count EXCLUDES reasoning: ``input + output + reasoning == total`` (with reasoning > 0) can only be so when the
    sender counted thinking apart from output (the Vercel AI SDK v5's Google provider, OpenInference's Gemini
    spans). The house rule puts reasoning inside output."""
    if (usage.input is None) != (usage.output is None):
        known = usage.input if usage.input is not None else usage.output
        assert known is not None
        if total >= known:
            if usage.input is None:
                usage.input = total - known
            else:
                usage.output = total - known
    elif (
        usage.input is not None
        and usage.output is not None
        and usage.reasoning > 0
        and usage.input + usage.output + usage.reasoning == total
    ):
        usage.output += usage.reasoning


def _capped(
    inclusive_input: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    reasoning: int,
    write_1h: int,
    audio_in: int,
    audio_out: int,
    counted: bool,
    notes: Notes,
) -> tuple[int, int, int, int, int, int, int, int, bool]:
    """The parts capped to their wholes (an inconsistent span is kept, with a note per cap)."""
    if cache_read + cache_write > inclusive_input:
        # Only an input count that EXCLUDES the cache (Anthropic's own convention, sent under an inclusive name) can
        # be smaller than its cached part: capping would under-price the call; adding the cache prices it exactly.
        notes.append(
            f"cached input ({cache_read} read + {cache_write} written) exceeds input {inclusive_input}: "
            "taken as an input count exclusive of the cache"
        )
        inclusive_input += cache_read + cache_write
        if inclusive_input > MAX_TOKENS:
            raise SpanRejected(f"token counts add up to more than {MAX_TOKENS}")
    if reasoning > output_tokens:
        notes.append(f"reasoning tokens {reasoning} exceed output {output_tokens}: capped")
        reasoning = output_tokens
    if write_1h > cache_write:
        notes.append(f"1-hour cache writes {write_1h} exceed cache writes {cache_write}: capped")
        write_1h = cache_write
    if audio_in > inclusive_input:
        notes.append(f"audio input tokens {audio_in} exceed input {inclusive_input}: capped")
        audio_in = inclusive_input
    if audio_out > output_tokens:
        notes.append(f"audio output tokens {audio_out} exceed output {output_tokens}: capped")
        audio_out = output_tokens
    return inclusive_input, output_tokens, cache_read, cache_write, reasoning, write_1h, audio_in, audio_out, counted


def reported_cost(found: Found, key: str | None, notes: Notes) -> int | None:
    """A provider- or gateway-reported cost in USD, as pico-dollars: an attribute (number or decimal text), else the
    Vercel AI SDK's provider metadata (AI Gateway ``gateway.cost``, OpenRouter ``openrouter.usage.cost``). A value
    that is not a finite, non-negative amount the cost column can hold is dropped with a note."""
    raw: object = None
    if key is not None:
        raw = plain(found[key])
        if raw is None or raw == "":
            return None
    elif VERCEL_PROVIDER_METADATA in found:
        obj = json_object(found[VERCEL_PROVIDER_METADATA], exact=True)
        if not isinstance(obj, dict):
            return None
        gateway, openrouter = obj.get("gateway"), obj.get("openrouter")
        if isinstance(gateway, dict) and gateway.get("cost") is not None:
            raw = gateway["cost"]
        elif isinstance(openrouter, dict) and isinstance(openrouter.get("usage"), dict):
            raw = openrouter["usage"].get("cost")
        if raw is None:
            return None
    else:
        return None
    cost = amount(raw)
    if cost is None or not (0 <= cost < MAX_REPORTED_COST):
        notes.append(f"reported cost {str(as_lists(raw))[:40]!r} dropped: not an amount in USD")
        return None
    return to_picos(cost)
