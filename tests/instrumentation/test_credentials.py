"""Credential type and fingerprint: which key paid, without the key ever reaching a span."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tokentrail.instrumentation import _credentials, attribute, credential_id, instrument, semconv
from tokentrail.processor.demo.fake_provider import FakeProvider

from tests.helpers.spans import CUSTOMER_KEY, SYSTEM_KEY, TEST_SALT, attrs, genai_spans, only_genai_span

MESSAGES: Any = [{"role": "user", "content": "hi"}]
pytestmark = pytest.mark.usefixtures("instrumented")


def chat(fake: FakeProvider, key: str) -> None:
    openai.OpenAI(base_url=fake.openai_base_url, api_key=key, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )


def credential(exporter: InMemorySpanExporter) -> tuple[str, str]:
    a = attrs(only_genai_span(exporter))
    return a[semconv.TOKENTRAIL_CREDENTIAL_TYPE], a[semconv.TOKENTRAIL_CREDENTIAL_ID]


def expected_id(key: str, salt: str = TEST_SALT) -> str:
    return hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()[:16]


def test_a_configured_system_key_is_system(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake, SYSTEM_KEY)
    assert credential(exporter) == ("system", expected_id(SYSTEM_KEY))


def test_a_key_passed_in_code_is_the_services_own_by_default(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    """Issue 12, item 1: the normal setup, a key from a secret manager passed in code and no OPENAI_API_KEY, was
    reported as BYOK (priced at $0 by default) on every call."""
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT)  # no system_keys, no provider env var
    key_from_secret_manager = CUSTOMER_KEY
    chat(fake, key_from_secret_manager)
    assert credential(exporter) == ("system", expected_id(CUSTOMER_KEY))


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_unknown_keys_byok_makes_every_unlisted_key_byok_and_system_keys_the_exceptions(
    how: str,
    fake: FakeProvider,
    exporter: InMemorySpanExporter,
    clean_env: pytest.MonkeyPatch,
    instrumented: TracerProvider,
) -> None:
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-env-system-key")
    if how == "environment":
        clean_env.setenv(semconv.ENV_UNKNOWN_KEYS, " BYOK ")
        instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    else:
        clean_env.setenv(semconv.ENV_UNKNOWN_KEYS, "system")  # the argument wins over the environment
        instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT, unknown_keys="byok")
    for key in (CUSTOMER_KEY, SYSTEM_KEY, "sk-ant-env-system-key"):
        chat(fake, key)
    kinds = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_TYPE] for span in genai_spans(exporter)]
    assert kinds == ["byok", "system", "system"]


def test_byok_keys_name_customers_keys_by_key_or_by_fingerprint(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    other = "sk-customer-two-0000000000"
    # A dedicated deployment may hold a customer's key in OPENAI_API_KEY: named as BYOK, it is BYOK.
    clean_env.setenv("OPENAI_API_KEY", other)
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, byok_keys=[CUSTOMER_KEY, expected_id(other)])
    for key in (CUSTOMER_KEY, other, SYSTEM_KEY):
        chat(fake, key)
    kinds = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_TYPE] for span in genai_spans(exporter)]
    assert kinds == ["byok", "byok", "system"]


def test_the_byok_resolver_is_asked_with_the_fingerprint_on_every_call(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    """A customer's key may be registered while the service runs: the answer is asked again on each call, not
    remembered. The resolver sees the credential id, never the key."""
    asked: list[str] = []
    customers: set[str] = set()

    def resolver(key_id: str) -> bool | None:
        asked.append(key_id)
        if key_id in customers:
            return True
        return False if key_id == credential_id(SYSTEM_KEY) else None

    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, unknown_keys="byok", byok=resolver)
    chat(fake, CUSTOMER_KEY)  # None: left to unknown_keys
    customers.add(credential_id(CUSTOMER_KEY))
    chat(fake, CUSTOMER_KEY)  # True
    chat(fake, SYSTEM_KEY)  # False: the resolver wins over unknown_keys="byok"
    with attribute(credential="system"):
        chat(fake, CUSTOMER_KEY)  # attribute() wins over the resolver, which is not even asked
    kinds = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_TYPE] for span in genai_spans(exporter)]
    assert kinds == ["byok", "byok", "system", "system"]
    assert asked == [expected_id(CUSTOMER_KEY), expected_id(CUSTOMER_KEY), expected_id(SYSTEM_KEY)]


def test_a_failing_or_confused_resolver_is_reported_once_and_the_calls_go_on(
    fake: FakeProvider,
    exporter: InMemorySpanExporter,
    clean_env: pytest.MonkeyPatch,
    instrumented: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(key_id: str) -> bool | None:
        raise LookupError("customer database down")

    def confused(key_id: str) -> Any:
        return "byok"  # not a bool: ignored, not guessed at

    for resolver in (broken, confused):
        instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, byok=resolver)
        with caplog.at_level(logging.WARNING, logger=_credentials.__name__):
            caplog.clear()
            chat(fake, CUSTOMER_KEY)
            chat(fake, CUSTOMER_KEY)
        assert len([r for r in caplog.records if "resolver" in r.getMessage()]) == 1
    kinds = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_TYPE] for span in genai_spans(exporter)]
    assert kinds == ["system"] * 4


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_bad_unknown_keys_value_is_refused_and_the_settings_in_force_stay(
    how: str,
    fake: FakeProvider,
    exporter: InMemorySpanExporter,
    clean_env: pytest.MonkeyPatch,
    instrumented: TracerProvider,
) -> None:
    arguments: dict[str, Any] = {"tracer_provider": instrumented, "fingerprint_salt": TEST_SALT}
    if how == "environment":
        clean_env.setenv(semconv.ENV_UNKNOWN_KEYS, "customer")
        match = semconv.ENV_UNKNOWN_KEYS
    else:
        arguments["unknown_keys"] = "bkoy"
        match = "unknown_keys='bkoy'"
    with pytest.raises(ValueError, match=match):
        instrument(**arguments)
    clean_env.delenv(semconv.ENV_UNKNOWN_KEYS, raising=False)
    with pytest.raises(TypeError, match="byok must be a callable"):
        instrument(tracer_provider=instrumented, byok=frozenset({"0123456789abcdef"}))  # type: ignore[arg-type]
    chat(fake, CUSTOMER_KEY)
    # Still the fixture's settings: its salt, its system key, unknown keys the service's own.
    assert credential(exporter) == ("system", expected_id(CUSTOMER_KEY))


def test_instrument_says_which_credential_rule_is_in_force_once(
    caplog: pytest.LogCaptureFixture, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    def rule_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("TokenTrail credentials:")]

    with caplog.at_level(logging.INFO):
        caplog.clear()
        instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, byok_keys=[CUSTOMER_KEY])
        instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT, byok_keys=[CUSTOMER_KEY])
        assert rule_lines() == [
            'TokenTrail credentials: a key is the service\'s own (system) unless attribute(credential="byok"), '
            "byok_keys or the byok resolver say otherwise (byok_keys: 1, byok resolver: none; "
            "TOKENTRAIL_UNKNOWN_KEYS=byok makes unlisted keys byok)"
        ]
        caplog.clear()
        clean_env.setenv(semconv.ENV_UNKNOWN_KEYS, "byok")
        instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
        (line,) = rule_lines()
    assert line.startswith(
        f"TokenTrail credentials: a key is byok ({semconv.ENV_UNKNOWN_KEYS}=byok) except the 1 system key(s) "
    )
    assert SYSTEM_KEY not in caplog.text and expected_id(SYSTEM_KEY) not in caplog.text


def test_credential_id_is_the_id_the_spans_carry(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch
) -> None:
    assert credential_id(CUSTOMER_KEY) == expected_id(CUSTOMER_KEY)  # the fixture's salt, once instrumented
    chat(fake, CUSTOMER_KEY)
    assert credential(exporter)[1] == credential_id(CUSTOMER_KEY)


def test_an_explicit_credential_type_wins_over_the_key(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with attribute(credential="byok"):
        chat(fake, SYSTEM_KEY)
    assert credential(exporter) == ("byok", expected_id(SYSTEM_KEY))


def test_provider_env_keys_are_system_keys(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv("OPENAI_API_KEY", CUSTOMER_KEY)
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT)
    chat(fake, CUSTOMER_KEY)
    assert credential(exporter)[0] == "system"


def test_tokentrail_system_keys_env_lists_more_system_keys(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv(semconv.ENV_SYSTEM_KEYS, f"sk-other, {CUSTOMER_KEY}")
    instrument(tracer_provider=instrumented, fingerprint_salt=TEST_SALT)
    chat(fake, CUSTOMER_KEY)
    assert credential(exporter)[0] == "system"


def test_the_salt_comes_from_the_environment_when_not_given(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv(semconv.ENV_FINGERPRINT_SALT, "env-salt")
    instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY])
    chat(fake, SYSTEM_KEY)
    assert credential(exporter) == ("system", expected_id(SYSTEM_KEY, "env-salt"))


def test_the_same_key_always_has_the_same_id_and_different_keys_differ(
    fake: FakeProvider, exporter: InMemorySpanExporter
) -> None:
    for key in (CUSTOMER_KEY, CUSTOMER_KEY, SYSTEM_KEY):
        chat(fake, key)
    ids = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_ID] for span in genai_spans(exporter)]
    assert ids[0] == ids[1] != ids[2]


def test_x_api_key_header_is_read(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as client:
        client.post(
            fake.base_url + "/v1/messages",
            json={"model": "claude-x", "max_tokens": 5, "messages": MESSAGES},
            headers={"x-api-key": CUSTOMER_KEY},
        )
    assert credential(exporter) == ("system", expected_id(CUSTOMER_KEY))


def test_a_request_without_a_key_has_no_credential_id(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    with httpx2.Client() as client:
        client.post(fake.openai_base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES})
    a = attrs(only_genai_span(exporter))
    assert semconv.TOKENTRAIL_CREDENTIAL_ID not in a and semconv.TOKENTRAIL_CREDENTIAL_TYPE not in a


def test_the_default_salt_is_used_with_one_warning(caplog: pytest.LogCaptureFixture, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(_credentials, "_warned_default_salt", False)
    with caplog.at_level(logging.WARNING, logger=_credentials.__name__):
        first = _credentials.resolve_salt(None)
        second = _credentials.resolve_salt(None)
    assert first == second == _credentials.DEFAULT_FINGERPRINT_SALT.encode()
    assert len([r for r in caplog.records if "salt" in r.getMessage()]) == 1


def test_a_fingerprint_gets_its_friendly_name_from_the_environment(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv(semconv.ENV_CREDENTIAL_NAMES, f"{expected_id(SYSTEM_KEY)}=prod-main, 0123456789abcdef=other")
    instrument(tracer_provider=instrumented, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT)
    chat(fake, SYSTEM_KEY)
    chat(fake, CUSTOMER_KEY)
    named, unnamed = (attrs(span) for span in genai_spans(exporter))
    assert named[semconv.TOKENTRAIL_CREDENTIAL_NAME] == "prod-main"
    assert semconv.TOKENTRAIL_CREDENTIAL_NAME not in unnamed


def test_instrument_names_keys_by_fingerprint_or_by_the_key_itself(
    fake: FakeProvider, exporter: InMemorySpanExporter, clean_env: pytest.MonkeyPatch, instrumented: TracerProvider
) -> None:
    clean_env.setenv(semconv.ENV_CREDENTIAL_NAMES, f"{expected_id(SYSTEM_KEY)}=from-env")
    instrument(
        tracer_provider=instrumented,
        fingerprint_salt=TEST_SALT,
        credential_names={expected_id(SYSTEM_KEY): "from-code", CUSTOMER_KEY: "acme-byok"},
    )
    chat(fake, SYSTEM_KEY)
    chat(fake, CUSTOMER_KEY)
    names = [attrs(span)[semconv.TOKENTRAIL_CREDENTIAL_NAME] for span in genai_spans(exporter)]
    assert names == ["from-code", "acme-byok"]  # the argument wins over the environment


def test_a_malformed_credential_names_entry_is_skipped_without_echoing_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        names = _credentials.credential_names(b"s", environ={semconv.ENV_CREDENTIAL_NAMES: f"{CUSTOMER_KEY},ab=x"})
    assert names == {_credentials.fingerprint("ab", b"s"): "x"}
    assert CUSTOMER_KEY not in caplog.text


def _texts_of(spans: Iterable[ReadableSpan]) -> list[str]:
    texts: list[str] = []
    for span in spans:
        texts.append(span.name)
        for name, value in (span.attributes or {}).items():
            texts.append(name)
            texts.extend(str(item) for item in (value if isinstance(value, tuple) else (value,)))
        texts.append(span.status.description or "")
        for event in span.events:
            texts.append(event.name)
            texts.extend(str(value) for value in (event.attributes or {}).values())
    return texts


def test_no_exported_span_or_log_line_contains_any_part_of_an_api_key(
    fake: FakeProvider,
    exporter: InMemorySpanExporter,
    instrumented: TracerProvider,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every interface, streamed and not, failures included, with every logger at DEBUG (where our hooks log
    their own errors with tracebacks)."""
    from tokentrail.instrumentation import _parsers

    caplog.set_level(logging.DEBUG)
    with attribute(user="cust", tags=["plan:pro"]):
        for key in (SYSTEM_KEY, CUSTOMER_KEY):
            client = openai.OpenAI(base_url=fake.openai_base_url, api_key=key, max_retries=0)
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
            client.responses.create(model="gpt-5", input="hi")
            list(client.responses.create(model="gpt-5", input="hi", stream=True))
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
            client.embeddings.create(model="text-embedding-3-small", input="hi")
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-fake-fail": "status:429"})
            with pytest.raises(openai.APIConnectionError):
                list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True, extra_headers={"x-fake-fail": "midstream"}))
        for options in ({"open_telemetry": {"tracer_provider": instrumented}}, {"open_telemetry": False}):
            anthropic_client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=CUSTOMER_KEY, **options)
            anthropic_client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
            for _ in anthropic_client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES, stream=True):
                pass
        # Our own failures log tracebacks at debug level: those must be clean too.
        def broken(self: object, chunk: bytes) -> None:
            raise RuntimeError("bug in TokenTrail")

        monkeypatch.setattr(_parsers.SseParser, "feed", broken)
        list(openai.OpenAI(base_url=fake.openai_base_url, api_key=CUSTOMER_KEY).chat.completions.create(
            model="m", messages=MESSAGES, stream=True
        ))
    spans = exporter.get_finished_spans()
    assert len(genai_spans(exporter)) >= 20
    assert any("bug in TokenTrail" in record.getMessage() or record.exc_info for record in caplog.records)
    blob = "\n".join(_texts_of(spans)) + "\n" + caplog.text + "\n".join(
        repr(record.__dict__) for record in caplog.records
    )
    for key in (SYSTEM_KEY, CUSTOMER_KEY):
        # Every 8-character window of the key's secret part, not only the whole key.
        secret = key.removeprefix("sk-")
        assert not [secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in blob]


def test_a_remembered_key_follows_new_names_salt_and_system_keys(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    def credential_of_last_call() -> tuple[object, object, object]:
        a = attrs(genai_spans(exporter)[-1])
        return (
            a.get(semconv.TOKENTRAIL_CREDENTIAL_TYPE),
            a.get(semconv.TOKENTRAIL_CREDENTIAL_ID),
            a.get(semconv.TOKENTRAIL_CREDENTIAL_NAME),
        )

    provider = instrumented
    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT, credential_names={SYSTEM_KEY: "a"})
    chat(fake, SYSTEM_KEY)
    chat(fake, SYSTEM_KEY)  # now from the memory
    assert credential_of_last_call() == ("system", _credentials.fingerprint(SYSTEM_KEY, TEST_SALT.encode()), "a")

    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt=TEST_SALT, credential_names={SYSTEM_KEY: "b"})
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call()[2] == "b"

    instrument(tracer_provider=provider, system_keys=[SYSTEM_KEY], fingerprint_salt="another-salt")
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call() == ("system", _credentials.fingerprint(SYSTEM_KEY, b"another-salt"), None)

    instrument(tracer_provider=provider, system_keys=[CUSTOMER_KEY], fingerprint_salt=TEST_SALT, unknown_keys="byok")
    chat(fake, SYSTEM_KEY)
    assert credential_of_last_call()[0] == "byok"  # no longer one of the service's keys


@pytest.mark.parametrize("explicit", [None, "byok", "system"])
def test_the_fingerprinter_classifies_each_credential_header(explicit: str | None) -> None:
    salt = b"s"
    system_id, customer_id = _credentials.fingerprint(SYSTEM_KEY, salt), _credentials.fingerprint(CUSTOMER_KEY, salt)
    fingerprinter = _credentials.Fingerprinter(salt, frozenset({system_id}), {customer_id: "acme"}, unknown="byok")
    cases = [
        ((f"Bearer {SYSTEM_KEY}".encode(), None, None), ("system", system_id, None)),
        ((f"Bearer {CUSTOMER_KEY}".encode(), None, None), ("byok", customer_id, "acme")),
        ((None, CUSTOMER_KEY.encode(), None), ("byok", customer_id, "acme")),  # Anthropic's x-api-key
        ((None, None, SYSTEM_KEY.encode()), ("system", system_id, None)),  # Azure's api-key
        ((b"Basic abc", None, None), (None, None, None)),
        ((None, None, None), (None, None, None)),
    ]
    for headers, (kind, key_id, name) in cases * 2:  # the second time from the memory
        expected_kind = explicit if explicit is not None else kind
        assert fingerprinter.classify(*headers, explicit) == (expected_kind, key_id, name)
    assert SYSTEM_KEY not in repr(fingerprinter)
    by_default = _credentials.Fingerprinter(salt, frozenset({system_id}))
    assert by_default.classify(f"Bearer {CUSTOMER_KEY}".encode(), None, None, explicit) == (
        explicit or "system", customer_id, None
    )
