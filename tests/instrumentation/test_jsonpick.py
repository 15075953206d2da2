"""The body field picker: ``pick(data, spec)`` is ``project(json.loads(data), spec)``, value for value and error for
error, whether the C walker (``_jsonpick.c``) vouches for its answer or hands the body to json; and the facts the
instrumentation reads from picked bodies are the facts of whole ones."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokentrail.instrumentation import _jsonbody, _parsers, _request, _spans, _usage, semconv

walk = _jsonbody._walk
KEYS = ["model", "stream", "user", "usage", "choices", "index", "finish_reason", "id", "a", "mo\u0064el", "é", ""]
SPECS: list[dict[str, Any]] = [
    {},
    {"model": None},
    {"model": None, "stream": None, "user": None, "a": None},
    {"choices": {"index": None, "finish_reason": None}, "usage": None, "id": None},
    {"a": {"a": {"a": None}, "usage": None}, "é": None, "": None},
    _request.REQUEST_FIELDS,
    *_parsers.RESPONSE_FIELDS.values(),
]


def same(left: Any, right: Any) -> bool:
    """Equal values, equal types and key order, NaN equal to NaN and -0.0 told from 0.0 (json keeps both apart)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or (left == right and math.copysign(1, left) == math.copysign(1, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    return bool(left == right)


def expected(data: bytes, spec: dict[str, Any]) -> tuple[type[Exception] | None, Any]:
    """(None, what pick must give) or (the error's class, None) when json refuses ``data``."""
    try:
        return None, _jsonbody.project(_jsonbody.loads(data), spec)
    except (ValueError, RecursionError) as error:
        return type(error), None


def check(data: bytes, spec: dict[str, Any], must_vouch: bool = False) -> None:
    error, value = expected(data, spec)
    walked = walk(data, spec)
    if error is not None:
        assert walked is None, data[:200]
        with pytest.raises(error):
            _jsonbody.pick(data, spec)
        return
    if must_vouch:
        assert walked is not None, data[:200]
    if walked is not None:
        assert same(walked, value), (data[:200], walked, value)
    assert same(_jsonbody.pick(data, spec), value)


def test_the_walker_is_built() -> None:
    """CI compiles it, so every test here exercises the C walker, not only its fallback."""
    assert _jsonbody.walker_built()


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(st.tuples(st.sampled_from(KEYS), children), max_size=5),  # pairs: duplicate keys happen
    ),
    max_leaves=25,
)


def to_json(value: Any, ensure_ascii: bool, spaced: bool) -> str:
    """``json.dumps``, with lists of pairs written as objects that may repeat keys."""
    separators = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, list) and value and all(isinstance(item, tuple) for item in value):
        return "{" + separators[0].join(
            json.dumps(key, ensure_ascii=ensure_ascii) + separators[1] + to_json(item, ensure_ascii, spaced)
            for key, item in value
        ) + "}"
    if isinstance(value, list):
        return "[" + separators[0].join(to_json(item, ensure_ascii, spaced) for item in value) + "]"
    if isinstance(value, tuple):
        return to_json(list(value), ensure_ascii, spaced)
    return json.dumps(value, ensure_ascii=ensure_ascii)


OBJECTS = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=OBJECTS, spec=st.sampled_from(SPECS), ensure_ascii=st.booleans(), spaced=st.booleans())
def test_valid_bodies_are_picked_as_json_decodes_them(
    pairs: list[tuple[str, Any]], spec: dict[str, Any], ensure_ascii: bool, spaced: bool
) -> None:
    data = ("{" + ("," if not spaced else ", ").join(
        json.dumps(key, ensure_ascii=ensure_ascii) + (":" if not spaced else ": ") + to_json(value, ensure_ascii, spaced)
        for key, value in pairs
    ) + "}").encode()
    check(data, spec, must_vouch=True)


MUTATIONS = st.sampled_from(list(b'{}[]",:\\ \t\n\r0123456789-+.eEtrufalsnNI\x00\x01\x1f\x7f') + [0x80, 0xC0, 0xED, 0xF4, 0xFF])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=OBJECTS,
    spec=st.sampled_from(SPECS),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=2), MUTATIONS), min_size=1, max_size=3),
)
def test_bent_bodies_are_refused_where_json_refuses_them(
    pairs: list[tuple[str, Any]], spec: dict[str, Any], edits: list[tuple[int, int, int]]
) -> None:
    data = bytearray(("{" + ",".join(json.dumps(k) + ":" + to_json(v, False, False) for k, v in pairs) + "}").encode())
    for position, how, byte in edits:
        at = position % (len(data) + 1)
        if how == 0:
            data[at:at] = bytes([byte])
        elif how == 1 and at < len(data):
            data[at] = byte
        elif at < len(data):
            del data[at]
    check(bytes(data), spec)


EDGES: list[bytes] = [
    b"{}",
    b"{ }",
    b"{}\n\t \r",
    b"{} x",
    b"{}{}",
    b"{\x00}",
    b'{"model":"a",}',
    b'{,"model":"a"}',
    b'{"model" "a"}',
    b'{"model":}',
    b'{"model":"a"',
    b'{"model":"a"]',
    b"{'model':'a'}",
    b'{model:"a"}',
    b'{"model":01}',
    b'{"model":-0}',
    b'{"model":-0.0}',
    b'{"model":1.}',
    b'{"model":.5}',
    b'{"model":1e}',
    b'{"model":1e+}',
    b'{"model":1E-2}',
    b'{"model":1.5e+300}',
    b'{"model":1e400}',
    b'{"model":-1e400}',
    b'{"model":-}',
    b'{"model":--1}',
    b'{"model":+1}',
    b'{"model":123456789012345678}',
    b'{"model":1234567890123456789}',
    b'{"model":-9223372036854775809}',
    b'{"model":NaN}',
    b'{"model":-NaN}',
    b'{"model":Infinity}',
    b'{"model":-Infinity}',
    b'{"model":-Infinit}',
    b'{"model":Infinit}',
    b'{"model":nul}',
    b'{"model":tru}',
    b'{"model":fals}',
    b'{"model":True}',
    b'{"model":null,"model":"b"}',
    b'{"model":"a","stream":true,"model":"b"}',
    b'{"mo\\u0064el":"escaped key"}',
    b'{"model":"\\u00e9\\u4e2d\\ud83d\\ude00"}',
    b'{"model":"\\ud83d"}',
    b'{"model":"\\ude00\\ud83d"}',
    b'{"model":"\\ud83d\\u0041"}',
    b'{"model":"\\ud83d\\ud83d\\ude00"}',
    b'{"model":"\\u12"}',
    b'{"model":"\\u12g4"}',
    b'{"model":"\\x41"}',
    b'{"model":"\\/\\b\\f\\n\\r\\t\\"\\\\"}',
    b'{"model":"tab\there"}',
    b'{"model":"del\x7fhere"}',
    b'{"model":"nl\nhere"}',
    '{"model":"caf\u00e9 \u4e2d\u6587 \U0001f600"}'.encode(),
    b'{"model":"\xc0\x80"}',
    b'{"model":"\xe0\x80\x80"}',
    b'{"model":"\xed\xa0\x80"}',
    b'{"model":"\xf0\x80\x80\x80"}',
    b'{"model":"\xf4\x90\x80\x80"}',
    b'{"model":"\xf5\x80\x80\x80"}',
    b'{"model":"\xc3"}',
    b'{"model":"\xe2\x82"}',
    b'{"model":"\xff"}',
    b'{"x":"\xed\xa0\x80","model":"a"}',
    b'{"model":"a"}\xc3\xa9',
    b'{"model":"a"}\x0c',
    b'{"model":"a"}\x0b',
    b'{"choices":[{"index":0,"finish_reason":"stop","message":{"content":"x"}},"junk",[{"index":1}],7]}',
    b'{"choices":{"index":3,"finish_reason":"stop","other":1}}',
    b'{"choices":"text"}',
    b'{"choices":[]}',
    b'{"a":{"a":{"a":[1,{"a":2}],"b":3},"usage":[{"x":1}]}}',
    b'{"model":"' + b"long " * 5000 + b'"}',
    b'{"messages":[' + b",".join([b'{"role":"user","content":"' + b"word " * 200 + b'"}'] * 50) + b'],"model":"m"}',
    b'{"model":' + b"1" * 4000 + b"}",
    b'{"model":' + b"1" * 4001 + b"}",
    b'{"model":' + b"1" * 5000 + b"}",
    b'{"model":1.' + b"1" * 5000 + b"}",
    b'{"x":' + b"[" * 199 + b"]" * 199 + b',"model":"deep"}',
    b'{"x":' + b"[" * 200 + b"]" * 200 + b',"model":"deep"}',
    b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"x":' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}",
]


@pytest.mark.parametrize("data", EDGES, ids=range(len(EDGES)))
@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_edge_cases(data: bytes, spec: dict[str, Any]) -> None:
    check(data, spec)


@pytest.mark.parametrize(
    "data",
    [
        b'{"model":"a"}',
        b'{"model":-0.0, "x": [NaN, Infinity, -Infinity, 1e400]}',
        b'{"model":"\\ud83d\\ude00\\ud83d"}',
        b'{"model":123456789012345678901234567890}',
        b'{"x":' + b"[" * 199 + b"]" * 199 + b',"model":"deep"}',
        '{"model":"caf\u00e9 \U0001f600", "\u00e9": 1}'.encode(),
    ],
)
def test_the_walker_vouches_for_what_it_can(data: bytes) -> None:
    """Valid bodies are answered by the walker itself, not handed to json (else the walker would speed nothing)."""
    for spec in SPECS:
        assert walk(data, spec) is not None
        check(data, spec)


@pytest.mark.parametrize(
    "data",
    [
        b'{"x":"\xed\xa0\x80"}',
        b'{"x":' + b"1" * 641 + b"}",
        b'{"x":' + b"1" * 4500 + b"}",
        b'{"x":' + b"[" * 201 + b"]" * 201 + b"}",
        b' {"x":1}',
    ],
)
def test_what_the_walker_leaves_to_json(data: bytes) -> None:
    """Encoded surrogates (accepted by the caller's surrogatepass), integers of over 640 digits (int() refuses them
    past sys.get_int_max_str_digits(), which may be that low), deep nesting and anything not starting with '{' go to
    json, which gives its own answer."""
    assert walk(data, {"x": None}) is None
    check(data, {"x": None})


def test_a_lowered_int_digit_limit_is_json_s_limit() -> None:
    """sys.set_int_max_str_digits (or PYTHONINTMAXSTRDIGITS) makes json refuse shorter integers: so does pick, even
    where the integer is in a field it does not keep."""
    import sys

    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(1000)
    try:
        data = b'{"a":1,"b":1' + b"0" * 1500 + b"}"
        for spec in ({"a": None}, {"b": None}):
            assert walk(data, spec) is None
            check(data, spec)
        assert walk(b'{"a":' + b"7" * 640 + b"}", {"a": None}) == {"a": int("7" * 640)}
    finally:
        sys.set_int_max_str_digits(previous)


def test_nesting_counts_against_the_recursion_limit_as_json_s_does() -> None:
    """json refuses a body it would recurse too deep for, from where it is called: so does the walker."""
    import inspect
    import sys

    data = b'{"a":1,"b":' + b"[" * 150 + b"]" * 150 + b"}"
    assert walk(data, {"a": None}) == {"a": 1}
    previous = sys.getrecursionlimit()

    def deep(depth: int) -> tuple[object, object]:
        if depth:
            return deep(depth - 1)
        return walk(data, {"a": None}), expected(data, {"a": None})

    # Room for ~100 more frames wherever pytest calls this from: the body nests 150 deep.
    sys.setrecursionlimit(len(inspect.stack(0)) + 200)
    try:
        walked, (error, _) = deep(100)
    finally:
        sys.setrecursionlimit(previous)
    assert error is RecursionError
    assert walked is None


def test_without_the_walker_pick_is_project_of_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_jsonbody, "_walk", None)
    assert _jsonbody.pick(b'{"a":1,"b":[{"c":2,"d":3}]}', {"b": {"c": None}}) == {"b": [{"c": 2}]}
    with pytest.raises(ValueError):
        _jsonbody.pick(b'{"a":1,}', {"a": None})


# The facts of picked bodies are those of whole ones ------------------------------------------------------------------

TOKENS = st.one_of(st.integers(min_value=-2, max_value=10**12), st.none(), st.floats(), st.booleans(), st.text(max_size=3))
NOISE = st.dictionaries(st.text(max_size=6), SCALARS, max_size=3)


def _usage_object() -> st.SearchStrategy[dict[str, Any]]:
    names = [
        "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", "prompt_cache_hit_tokens", "service_tier",
    ]  # fmt: skip
    details = st.dictionaries(
        st.sampled_from(["cached_tokens", "cache_write_tokens", "reasoning_tokens", "thinking_tokens", "audio_tokens"]),
        TOKENS,
        max_size=3,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            **{name: TOKENS for name in names},
            "prompt_tokens_details": details,
            "completion_tokens_details": details,
            "input_tokens_details": details,
            "output_tokens_details": details,
            "cache_creation": st.dictionaries(
                st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"]), TOKENS
            ),
        },
    )


CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": st.one_of(st.integers(0, 3), st.none(), st.booleans()),
        "finish_reason": st.one_of(st.sampled_from(["stop", "length", "tool_calls"]), st.none(), st.integers()),
        "message": st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text(max_size=30)}),
        "text": st.text(max_size=10),
    },
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "model": st.one_of(st.text(max_size=8), st.none()),
        "choices": st.one_of(st.lists(st.one_of(CHOICE, SCALARS), max_size=3), SCALARS),
        "usage": st.one_of(_usage_object(), SCALARS),
        "service_tier": st.one_of(st.sampled_from(["default", "Priority", ""]), st.none()),
        "status": st.sampled_from(["completed", "incomplete", "failed", "in_progress"]),
        "incomplete_details": st.one_of(st.fixed_dictionaries({"reason": st.sampled_from(["max_output_tokens", "x"])}), st.none()),
        "error": st.one_of(st.none(), st.fixed_dictionaries({"type": st.text(max_size=5), "message": st.text(max_size=5)})),
        "stop_reason": st.one_of(st.sampled_from(["end_turn", "max_tokens"]), st.none()),
        "output": st.lists(NOISE, max_size=2),
        "content": st.lists(NOISE, max_size=2),
        "data": st.lists(st.fixed_dictionaries({"embedding": st.lists(st.floats(allow_nan=False), max_size=4)}), max_size=2),
        "extra": NOISE,
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, api=st.sampled_from(list(_parsers.RESPONSE_FIELDS) + ["some.other.api"]))
def test_a_picked_response_body_gives_the_facts_of_the_whole_one(body: dict[str, Any], api: str) -> None:
    whole = _usage.facts_from_json(api, body)
    parser = _parsers.JsonBodyParser(api)
    parser.feed(json.dumps(body).encode())
    facts = parser.result()
    assert facts == whole
    assert _spans.response_attributes(facts) == _spans.response_attributes(whole)


REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.text(max_size=8), st.integers(), st.none()),
        "stream": st.one_of(st.booleans(), st.none(), st.integers(0, 1)),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.one_of(st.booleans(), st.none())}), SCALARS),
        "user": st.one_of(st.text(max_size=8), st.none(), st.integers()),
        "safety_identifier": st.one_of(st.text(max_size=8), st.none()),
        "metadata": st.one_of(st.fixed_dictionaries({"user_id": st.one_of(st.text(max_size=8), st.integers())}), SCALARS),
        "providerOptions": st.one_of(
            st.fixed_dictionaries(
                {"gateway": st.fixed_dictionaries({}, optional={"user": st.text(max_size=5), "tags": st.lists(st.text(max_size=5), max_size=3)})}
            ),
            SCALARS,
        ),
        "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": st.text(max_size=40)}), max_size=3),
        "input": st.text(max_size=20),
        "tools": st.lists(st.fixed_dictionaries({"model": st.text(max_size=4), "user": st.text(max_size=4)}), max_size=2),
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=REQUESTS, api=st.sampled_from([semconv.API_CHAT_COMPLETIONS, semconv.API_ANTHROPIC_MESSAGES, semconv.API_RESPONSES, semconv.API_COMPLETIONS]))
@example(body={"model": "m", "messages": [], "tools": [{"model": "inner", "user": "inner"}]}, api=semconv.API_CHAT_COMPLETIONS)
def test_a_picked_request_body_gives_the_facts_of_the_whole_one(body: dict[str, Any], api: str) -> None:
    data = json.dumps(body).encode()
    picked = _request.read_request(api, data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_request, "pick", lambda data, spec: _jsonbody.loads(data))  # the whole body, every field
        whole = _request.read_request(api, data)
    assert picked == whole
