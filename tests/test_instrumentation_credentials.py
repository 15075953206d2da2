"""Credential type and fingerprint: which key paid, without the key ever reaching a span."""

from __future__ import annotations

import hashlib
import hmac
import logging

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import CUSTOMER_KEY, SYSTEM_KEY, TEST_SALT, attrs, genai_spans, only_genai_span
from tokentrail.instrumentation import _credentials, attribute, instrument, semconv
from tokentrail.processor.fake_provider import FakeProvider

MESSAGES = [{"role": "user", "content": "hi"}]
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


def test_any_other_key_is_byok(fake: FakeProvider, exporter: InMemorySpanExporter) -> None:
    chat(fake, CUSTOMER_KEY)
    assert credential(exporter) == ("byok", expected_id(CUSTOMER_KEY))


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
    assert credential(exporter) == ("byok", expected_id(CUSTOMER_KEY))


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


def test_no_span_attribute_contains_any_part_of_an_api_key(
    fake: FakeProvider, exporter: InMemorySpanExporter, instrumented: TracerProvider
) -> None:
    with attribute(user="cust", tags=["plan:pro"]):
        chat(fake, SYSTEM_KEY)
        chat(fake, CUSTOMER_KEY)
        for options in ({"open_telemetry": {"tracer_provider": instrumented}}, {"open_telemetry": False}):
            client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=CUSTOMER_KEY, **options)
            client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES)
            for _ in client.messages.create(model="claude-x", max_tokens=5, messages=MESSAGES, stream=True):
                pass
    spans = exporter.get_finished_spans()
    assert len(genai_spans(exporter)) == 6
    texts = [span.name for span in spans]
    for span in spans:
        for name, value in (span.attributes or {}).items():
            texts.append(name)
            texts.extend(str(item) for item in (value if isinstance(value, tuple) else (value,)))
        texts.append(span.status.description or "")
    blob = "\n".join(texts)
    for key in (SYSTEM_KEY, CUSTOMER_KEY):
        # Every 8-character window of the key's secret part, not only the whole key.
        secret = key.removeprefix("sk-")
        assert not [secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in blob]
