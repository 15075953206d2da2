"""Opt-in catalog auto-update: never needed to price (offline works), degrades to the bundled data when the network
fails and says so once, and a fetched catalog re-prices with a price_version that names it. No real network: the
"network" is a closed loopback port."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from genai_prices import data_snapshot
from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Provider
from tokentrail.processor import environment
from tokentrail.processor.pricing import catalog, updates
from tokentrail.processor.pricing.catalog import PRICE_VERSION, Pricer
from tokentrail.processor.pricing.overrides import NO_OVERRIDES
from tokentrail.processor.pricing.updates import start_auto_update, stop_auto_update

T = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.json"  # nothing listens: connection refused, at once


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(updates, "_warned_offline", False)
    monkeypatch.delenv(environment.PRICES_AUTO_UPDATE, raising=False)
    yield
    stop_auto_update()
    data_snapshot.set_custom_snapshot(None)


def test_without_the_opt_in_nothing_is_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(catalog, "start_auto_update", lambda **kw: started.append(kw))
    Pricer(overrides=NO_OVERRIDES)
    assert started == []
    monkeypatch.setenv(environment.PRICES_AUTO_UPDATE, "1")
    Pricer(overrides=NO_OVERRIDES)
    assert started == [{}]


def test_an_unreachable_network_keeps_the_bundled_prices_and_says_so_once(
    unreachable_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        updater = start_auto_update(url=unreachable_url, wait=10)
        assert updater.fetch() is None  # a second failure: still the bundled data, and no second warning
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "price catalog update failed" in warnings[0].getMessage()
    assert f"bundled {PRICE_VERSION}" in warnings[0].getMessage()
    assert not any(r.getMessage().startswith("Successfully fetched") for r in caplog.records)
    assert not data_snapshot.get_snapshot().from_auto_update
    quote = Pricer(overrides=NO_OVERRIDES).quote("openai", "gpt-4o", T, input_tokens=1000, output_tokens=100)
    assert quote is not None and quote.market_cost > 0


def test_a_fetched_catalog_is_used_at_once_and_named_in_price_version() -> None:
    pricer = Pricer(overrides=NO_OVERRIDES)
    before = pricer.quote("openai", "gpt-4o", T, input_tokens=10**6, output_tokens=0)
    assert before is not None and pricer.price_version == PRICE_VERSION
    fetched = data_snapshot.DataSnapshot(
        providers=[
            Provider(
                id="openai",
                name="OpenAI",
                api_pattern="",
                models=[ModelInfo(id="gpt-4o", match=ClauseEquals(equals="gpt-4o"), prices=ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2)))],
            )
        ],
        from_auto_update=True,
    )
    data_snapshot.set_custom_snapshot(fetched)  # what the library's updater does after a successful fetch
    after = pricer.quote("openai", "gpt-4o", T, input_tokens=10**6, output_tokens=0)
    assert after is not None and after.market_cost == Decimal(1) != before.market_cost
    assert pricer.price_version.startswith(f"{PRICE_VERSION} catalog=")
    data_snapshot.set_custom_snapshot(None)
    again = pricer.quote("openai", "gpt-4o", T, input_tokens=10**6, output_tokens=0)
    assert again == before and pricer.price_version == PRICE_VERSION
