"""Cost and token counters on the receiver's ``/metrics``, and the Grafana dashboard built on them: every metric and
label its queries use is one a real receiver exports after real spans (so a rename breaks this test), the counters
equal the stored records' sums exactly, a resent batch is not counted twice, no user or tag ever shows, and a flood
of invented model names stays bounded."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.ingest.metrics import MAX_LABEL_SETS, OTHER, OVERFLOW_LABEL_SETS, TOKEN_TYPES
from tokentrail.processor.ingest.receiver import Receiver

from tests.helpers.otlp import export, genai_attributes, make_request, make_span
from tests.helpers.receiver import read_usage

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "tokentrail.json"
USER = "cust-never-in-metrics-1234"
TAG = "plan:never-in-metrics-5678"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], str]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path, grpc_port=0, http_port=0, receiver_id="cost-r1", flush_interval=3600) as r:
        yield r


def scrape(receiver: Receiver) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{receiver.http_port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(text: str) -> Samples:
    found: Samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            found[(name, frozenset(LABEL.findall(labels or "")))] = value
    return found


def span(model: str, *, provider: str = "openai", credential: str = "system", seed: int = 0) -> Any:
    attrs = genai_attributes(
        {
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": 1000 + seed,
            "gen_ai.usage.output_tokens": 250 + seed,
            "gen_ai.usage.cache_read.input_tokens": 400,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "user.id": USER,
            "tokentrail.tags": [TAG, "feature:secret-feature"],
            "tokentrail.credential.type": credential,
        }
    )
    return make_span(attrs, trace_id=os.urandom(16), span_id=os.urandom(8))


def mixed_requests() -> list[Any]:
    """Priced and unpriced calls over two services, two credential types and several models."""
    checkout = [
        span("gpt-4o", seed=1),
        span("gpt-4o", seed=2),
        span("gpt-4o-mini", credential="byok", seed=3),
        span("house-finetune-nobody-prices", seed=4),
    ]
    search = [span("gpt-4o-mini", seed=5), span("claude-sonnet-4-20250514", provider="anthropic", seed=6)]
    return [make_request(checkout), make_request(search, {"service.name": "search"})]


def per_label_set(records: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], dict[str, Any]]:
    sums: dict[frozenset[tuple[str, str]], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for record in records:
        key = frozenset(
            {
                "receiver_id": "cost-r1",
                "provider": record["provider"],
                "model": record["model"],
                "credential_type": record["credential_type"],
                "service": record["service"] or "",
            }.items()
        )
        group = sums[key]
        group["cost"] += record["total_cost"] or Decimal(0)
        group["market"] += record["market_cost"] or Decimal(0)
        group["requests"] += 1
        group["unpriced"] += record["price_status"] == "unpriced"
        for token_type, column in TOKEN_TYPES.items():
            group[token_type] += record[column]
    return sums


def test_counters_equal_the_stored_records_exactly(receiver: Receiver, tmp_path: Path) -> None:
    for request in mixed_requests():
        export(receiver.grpc_port, request)
    seen = samples(scrape(receiver))
    receiver.flush()
    records = read_usage(tmp_path)
    assert len(records) == 6
    assert {r["price_status"] for r in records} >= {"priced", "unpriced"}
    expected = per_label_set(records)
    assert len(expected) == 5
    exported = {labels for (name, labels) in seen if name == "tokentrail_requests_total"}
    assert exported == set(expected)
    for labels, want in expected.items():
        assert Decimal(seen[("tokentrail_cost_usd_total", labels)]) == want["cost"]
        assert Decimal(seen[("tokentrail_market_cost_usd_total", labels)]) == want["market"]
        assert int(seen[("tokentrail_requests_total", labels)]) == want["requests"]
        assert int(seen[("tokentrail_unpriced_requests_total", labels)]) == want["unpriced"]
        for token_type in TOKEN_TYPES:
            typed = labels | {("type", token_type)}
            assert int(seen[("tokentrail_tokens_total", typed)]) == want[token_type]
    total = sum((Decimal(v) for (name, _), v in seen.items() if name == "tokentrail_cost_usd_total"), Decimal(0))
    assert total == sum((r["total_cost"] or Decimal(0) for r in records), Decimal(0)) > 0


def test_a_resent_batch_is_not_counted_twice(receiver: Receiver) -> None:
    requests = mixed_requests()
    for request in requests:
        export(receiver.grpc_port, request)
    first = samples(scrape(receiver))
    for request in requests:
        export(receiver.grpc_port, request)  # the sender's retry after a lost answer
    assert receiver.stats["deduplicated"] == 6
    again = samples(scrape(receiver))
    usage = {k: v for k, v in again.items() if not k[0].startswith("tokentrail_receiver_")}
    assert usage == {k: v for k, v in first.items() if not k[0].startswith("tokentrail_receiver_")}
    assert sum(int(v) for (name, _), v in usage.items() if name == "tokentrail_requests_total") == 6


def test_users_and_tags_never_appear(receiver: Receiver) -> None:
    for request in mixed_requests():
        export(receiver.grpc_port, request)
    text = scrape(receiver)
    assert 'model="gpt-4o"' in text  # the attribution that is allowed is there
    for secret in (USER, TAG, "secret-feature", "user", "tag"):
        assert secret not in text
    labels = {label for (name, found) in samples(text) for label, _ in found if name.startswith("tokentrail_")}
    assert labels <= {"receiver_id", "provider", "model", "credential_type", "service", "type"}


def test_a_flood_of_invented_models_stays_bounded_and_nothing_goes_uncounted(receiver: Receiver) -> None:
    n = MAX_LABEL_SETS + OVERFLOW_LABEL_SETS + 200
    spans = [span(f"invented-model-{i}", provider=f"vendor-{i}") for i in range(n)]
    for start in range(0, n, 400):
        export(receiver.grpc_port, make_request(spans[start : start + 400]))
    seen = samples(scrape(receiver))
    requests = {labels: int(v) for (name, labels), v in seen.items() if name == "tokentrail_requests_total"}
    assert len(requests) == MAX_LABEL_SETS + OVERFLOW_LABEL_SETS + 1
    assert sum(requests.values()) == n
    models = {dict(labels)["model"] for labels in requests}
    assert OTHER in models
    everything_other = dict.fromkeys(("provider", "model", "credential_type", "service"), OTHER)
    folded = [
        int(v) for labels, v in requests.items() if dict(labels) == {"receiver_id": "cost-r1", **everything_other}
    ]
    assert folded and folded[0] > 0


# -- the Grafana dashboard ---------------------------------------------------------------------------------------

METRIC = re.compile(r"\btokentrail_[a-z0-9_]+\b")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SELECTOR_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)")


def queries(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets' ``expr``, template variables' ``query``/``definition``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def test_every_metric_and_label_the_dashboard_queries_is_exported(receiver: Receiver) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for request in mixed_requests():
        export(receiver.grpc_port, request)
    seen = samples(scrape(receiver))
    labels_of: dict[str, set[str]] = defaultdict(set)
    for name, labels in seen:
        labels_of[name] |= {label for label, _ in labels}

    exprs = list(queries(dashboard))
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert {
        "tokentrail_cost_usd_total",
        "tokentrail_market_cost_usd_total",
        "tokentrail_tokens_total",
        "tokentrail_requests_total",
        "tokentrail_unpriced_requests_total",
        "tokentrail_receiver_exports_in_flight",
        "tokentrail_receiver_bytes_in_flight",
        "tokentrail_receiver_requests_busy_total",
    } <= used
    assert not used - set(labels_of), (
        f"the dashboard queries metrics the receiver does not export: {used - set(labels_of)}"
    )
    for expr in exprs:
        metrics = set(METRIC.findall(expr))
        available = set().union(*(labels_of[m] for m in metrics)) if metrics else set()
        wanted = {label.strip() for group in BY.findall(expr) for label in group.split(",") if label.strip()}
        wanted |= set(SELECTOR_LABEL.findall(expr))
        assert wanted <= available, (expr, wanted - available)
        for metric, label in LABEL_VALUES.findall(expr):
            assert label in labels_of[metric], expr
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
